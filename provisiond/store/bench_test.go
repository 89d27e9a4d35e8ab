package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkLeaseDurable measures durable lease writes (fsync on) from many
// goroutines: Update (one fsync each) against Batch (group commit).
func BenchmarkLeaseDurable(b *testing.B) {
	for _, mode := range []string{"update", "batch"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }() // test cleanup
			ctx := context.Background()
			var n atomic.Uint64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					l := Lease{MAC: fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)),
						IP: fmt.Sprintf("10.%d.%d.%d", byte(i>>16), byte(i>>8), byte(i))}
					fn := func(tx *Tx) error { return tx.PutLease(l) }
					var err error
					if mode == "batch" {
						err = s.Batch(ctx, fn)
					} else {
						err = s.Update(ctx, fn)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
		})
	}
}

// BenchmarkLookupByMAC measures the indexed lookup the DHCP server does
// per packet, with 10,000 hardware records.
func BenchmarkLookupByMAC(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }() // test cleanup
	ctx := context.Background()
	const n = 10000
	err = s.Update(ctx, func(tx *Tx) error {
		for i := range n {
			h := Hardware{ID: fmt.Sprint("hw-", i), Interfaces: []Interface{{MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)}}}
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := i % n
		if _, err := s.GetHardwareByMAC(ctx, fmt.Sprintf("02:00:00:00:%02x:%02x", j>>8, j&0xff)); err != nil {
			b.Fatal(err)
		}
	}
}
