package initsys

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EnsureEntropy makes sure getrandom(2), which Go's crypto/rand and the
// DHCP client use, will not block for minutes (LAB pitfall 2: a machine
// without RDRAND and an early kernel may wait a long time for its CRNG).
//
// It waits up to wait for the kernel's own initialisation; if the CRNG is
// still not ready, it feeds the pool with timing jitter and machine-unique
// data and credits it (RNDADDENTROPY). That is weaker than a hardware
// source: it is logged, and the only secret the agent handles (its token)
// came from provisiond, not from this pool.
func EnsureEntropy(log *slog.Logger, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for {
		if crngReady() {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Warn("kernel random pool not ready; seeding it from timing jitter so the agent does not block")
	if err := seedPool(); err != nil {
		log.Error("seed random pool", "err", err)
	}
}

func crngReady() bool {
	var b [1]byte
	_, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK)
	return !errors.Is(err, unix.EAGAIN)
}

func seedPool() error {
	h := sha256.New()
	// Jitter of a busy loop against the clock, plus what differs per machine.
	for i := 0; i < 4096; i++ {
		t0 := time.Now().UnixNano()
		x := 0
		for j := 0; j < 100+(i%7); j++ {
			x += j * j
		}
		_ = binary.Write(h, binary.LittleEndian, time.Now().UnixNano()-t0+int64(x&1)) // a hash takes any write
	}
	for _, f := range []string{"/proc/interrupts", "/proc/stat", "/proc/cmdline", "/sys/class/dmi/id/product_uuid", "/proc/meminfo"} {
		if b, err := os.ReadFile(f); err == nil {
			h.Write(b)
		}
	}
	seed := h.Sum(nil)
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // opened for the ioctl, nothing buffered
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0])))
	if e != 0 {
		return e
	}
	return nil
}
