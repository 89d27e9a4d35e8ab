package actions

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkImage2Disk measures image2disk from a loopback HTTP server into
// a file, with sha256 verified in the same pass. It reports MB/s of image
// written (decompressed bytes).
func BenchmarkImage2Disk(b *testing.B) {
	raw := testImage(64 << 20)
	for _, kind := range []string{"raw", "zst", "gz"} {
		b.Run(kind, func(b *testing.B) {
			served := compress(b, kind, raw)
			srv := serveFile(b, served)
			disk := filepath.Join(b.TempDir(), "disk")
			env := map[string]string{"IMG_URL": srv.URL, "DEST_DISK": disk, "COMPRESSED": "true", "SHA256": sum(served)}
			if kind == "raw" {
				env["COMPRESSED"] = "false"
			}
			act := New(Deps{ProgressEvery: time.Hour})
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := act.Image2Disk(context.Background(), Spec{Env: env}, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			mbs := float64(len(raw)) * float64(b.N) / 1e6 / time.Since(start).Seconds()
			b.ReportMetric(mbs, "MB/s-written")
			b.Logf("image2disk %s: %.0f MB/s written (%d MiB image, %d MiB served)", kind, mbs, len(raw)>>20, len(served)>>20)
		})
	}
}
