package runner

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// lockedWriter serialises writes from an action's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tail keeps the last max bytes written to it.
type tail struct {
	max     int
	buf     []byte
	dropped bool
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

// String returns the tail, starting at a line boundary when it was cut.
func (t *tail) String() string {
	b := t.buf
	if t.dropped {
		for i, c := range b {
			if c == '\n' && i+1 < len(b) {
				b = b[i+1:]
				break
			}
		}
		return "...\n" + string(b)
	}
	return string(b)
}

const logChunk = 32 << 10

// logStreamer sends an action's output to provisiond over StreamLogs, best
// effort: writes never block the action; when provisiond is away, output
// beyond the buffer is dropped (the report still carries the tail).
type logStreamer struct {
	r     *Runner
	ctx   context.Context
	wf    string
	index int32

	mu      sync.Mutex
	buf     []byte
	dropped int
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func (r *Runner) newLogStreamer(ctx context.Context, wf string, index int32) *logStreamer {
	l := &logStreamer{r: r, ctx: ctx, wf: wf, index: index, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *logStreamer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - l.r.cfg.LogBuffer; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
		l.dropped += over
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Close flushes what it can and ends the stream.
func (l *logStreamer) Close() {
	close(l.stop)
	<-l.done
}

func (l *logStreamer) loop() {
	defer close(l.done)
	var (
		stream    interface{ Send(*pb.LogChunk) error }
		closeFn   func()
		retryAt   time.Time
		streamCtx context.Context
		cancel    context.CancelFunc = func() {}
	)
	defer func() { cancel() }()
	flush := func() {
		l.mu.Lock()
		data, dropped := l.buf, l.dropped
		l.buf, l.dropped = nil, 0
		l.mu.Unlock()
		if dropped > 0 {
			data = append([]byte(fmt.Sprintf("[agent: %d bytes of output dropped while provisiond was unreachable]\n", dropped)), data...)
		}
		if len(data) == 0 {
			return
		}
		if stream == nil {
			if time.Now().Before(retryAt) {
				l.requeue(data)
				return
			}
			streamCtx, cancel = context.WithCancel(l.ctx)
			s, err := l.r.client.StreamLogs(streamCtx)
			if err != nil {
				cancel()
				retryAt = time.Now().Add(l.r.cfg.BackoffMax / 4)
				l.requeue(data)
				return
			}
			stream = s
			closeFn = func() {
				c, cc := context.WithTimeout(l.ctx, 5*time.Second)
				defer cc()
				done := make(chan struct{})
				go func() {
					// The chunks are sent; the answer only says whether
					// provisiond kept them, which nothing here can redo.
					if _, err := s.CloseAndRecv(); err != nil {
						l.r.log.Debug("close log stream", "err", err)
					}
					close(done)
				}()
				select {
				case <-done:
				case <-c.Done():
				}
				cancel()
			}
		}
		for len(data) > 0 {
			n := min(len(data), logChunk)
			if err := stream.Send(&pb.LogChunk{WorkflowId: l.wf, Index: l.index, Data: data[:n]}); err != nil {
				l.r.log.Debug("log stream broke", "err", err)
				cancel()
				stream, closeFn = nil, nil
				retryAt = time.Now().Add(l.r.cfg.BackoffMax / 4)
				l.requeue(data)
				return
			}
			data = data[n:]
		}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			flush()
			if closeFn != nil {
				closeFn()
			}
			return
		case <-l.wake:
		case <-tick.C:
		}
		flush()
	}
}

// requeue puts unsent data back in front of the buffer, within its bound.
func (l *logStreamer) requeue(data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(data, l.buf...)
	if over := len(l.buf) - l.r.cfg.LogBuffer; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
		l.dropped += over
	}
}
