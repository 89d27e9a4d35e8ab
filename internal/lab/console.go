package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Console follows a VM's serial log across power cycles (QEMU truncates the
// file at every start) and keeps every complete line with the time it was
// first seen, so a test can wait for lines in order and time the phases of
// a boot. It also appends the lines to a transcript file, the whole life of
// the VM in one place.
type Console struct {
	path       string
	transcript *os.File
	mu         sync.Mutex
	lines      []ConsoleLine
	changed    chan struct{}
}

// ConsoleLine is one line of a console and when it appeared.
type ConsoleLine struct {
	At   time.Time
	Text string
}

// FollowConsole follows path until ctx ends; transcript may be empty.
func FollowConsole(ctx context.Context, path, transcript string) (*Console, error) {
	c := &Console{path: path, changed: make(chan struct{})}
	if transcript != "" {
		f, err := os.Create(transcript)
		if err != nil {
			return nil, err
		}
		c.transcript = f
	}
	go c.follow(ctx)
	return c, nil
}

// The transcript is a copy for a person reading a failed run; the lines the
// tests wait on are kept in memory. So a failed write or close of it is
// dropped rather than ending the follow.
func (c *Console) follow(ctx context.Context) {
	defer func() {
		if c.transcript != nil {
			_ = c.transcript.Close()
		}
	}()
	var off int64
	var partial []byte
	var inode uint64
	for {
		b, err := os.ReadFile(c.path)
		if err == nil {
			ino := fileInode(c.path)
			if int64(len(b)) < off || ino != inode { // a new boot: QEMU recreated the file
				off, partial, inode = 0, nil, ino
			}
			if int64(len(b)) > off {
				partial = append(partial, b[off:]...)
				off = int64(len(b))
				c.add(&partial)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

// add moves the complete lines of *buf into the console.
func (c *Console) add(buf *[]byte) {
	now := time.Now()
	var added []ConsoleLine
	for {
		i := bytes.IndexByte(*buf, '\n')
		if i < 0 {
			break
		}
		text := strings.TrimRight(string((*buf)[:i]), "\r")
		*buf = (*buf)[i+1:]
		added = append(added, ConsoleLine{At: now, Text: text})
	}
	if len(added) == 0 {
		return
	}
	c.mu.Lock()
	c.lines = append(c.lines, added...)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c.transcript != nil {
		for _, l := range added {
			_, _ = fmt.Fprintf(c.transcript, "%s %s\n", l.At.Format("15:04:05.000"), l.Text)
		}
	}
}

// Len is the number of lines seen so far: pass it to Wait to look only at
// what comes next.
func (c *Console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// IndexAt returns the index of the first line seen at or after t.
func (c *Console) IndexAt(t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.lines {
		if !l.At.Before(t) {
			return i
		}
	}
	return len(c.lines)
}

// Wait returns the index and the line of the first line at or after index
// from that matches re, waiting for it until ctx ends.
func (c *Console) Wait(ctx context.Context, from int, re *regexp.Regexp) (int, ConsoleLine, error) {
	for {
		c.mu.Lock()
		for i := from; i < len(c.lines); i++ {
			if re.MatchString(c.lines[i].Text) {
				l := c.lines[i]
				c.mu.Unlock()
				return i, l, nil
			}
		}
		from = max(from, len(c.lines))
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ConsoleLine{}, fmt.Errorf("waiting for %q on the console of %s: %w", re, c.path, ctx.Err())
		case <-changed:
		}
	}
}

// Tail returns the last n lines.
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, l := range c.lines[max(0, len(c.lines)-n):] {
		b.WriteString(l.Text + "\n")
	}
	return b.String()
}

func fileInode(path string) uint64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}
