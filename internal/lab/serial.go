package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"time"
)

// pollInterval is how often WaitForLine rereads a serial log.
const pollInterval = 100 * time.Millisecond

// WaitForLine waits until the file at path (a VM's serial log) holds a line
// matching re and returns that line. It returns early with ctx's error (and
// the log's tail) when ctx ends. A missing file is waited for.
func WaitForLine(ctx context.Context, path string, re *regexp.Regexp) (string, error) {
	var data []byte
	var offset int
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read serial log: %w", err)
		}
		data = b
		// Only complete lines, starting at the first line not yet scanned.
		for {
			nl := bytes.IndexByte(data[offset:], '\n')
			if nl < 0 {
				break
			}
			line := bytes.TrimRight(data[offset:offset+nl], "\r")
			offset += nl + 1
			if re.Match(line) {
				return string(line), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q in %s: %w; log tail:\n%s", re, path, ctx.Err(), Tail(data, 1500))
		case <-time.After(pollInterval):
		}
	}
}

// WaitForString is WaitForLine for a literal substring.
func WaitForString(ctx context.Context, path, s string) (string, error) {
	return WaitForLine(ctx, path, regexp.MustCompile(regexp.QuoteMeta(s)))
}

// Tail returns the last n bytes of b as text, with the serial console's
// control sequences left as they are.
func Tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// ReadLog returns a serial log's contents ("" when it does not exist yet).
func ReadLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// WaitForOutput waits until re matches anywhere in the log, including a line
// still being written (iPXE prints progress dots before ending a line), and
// returns the match.
func WaitForOutput(ctx context.Context, path string, re *regexp.Regexp) (string, error) {
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read serial log: %w", err)
		}
		if m := re.Find(b); m != nil {
			return string(m), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q in %s: %w; log tail:\n%s", re, path, ctx.Err(), Tail(b, 1500))
		case <-time.After(pollInterval):
		}
	}
}
