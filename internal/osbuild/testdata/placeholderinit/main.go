// Command placeholderinit stands in for the agent in the osbuild tests only:
// as /init of the agent OS it loads the listed modules, reports what it sees
// on the console and powers the machine off. It is never shipped.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	list := filepath.Join("/lib/modules", release, "modules.load")
	loaded, failed := 0, 0
	if f, err := os.Open(list); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			mf, err := os.Open(filepath.Join(filepath.Dir(list), strings.TrimSpace(sc.Text())))
			if err == nil {
				err = unix.FinitModule(int(mf.Fd()), "", 0)
				mf.Close()
			}
			// A CPU-specific accelerator (kernel/arch/...) refuses with
			// ENODEV on a CPU without the feature (qemu64 has no PCLMUL):
			// optional, as the agent treats it.
			if err == unix.ENODEV && strings.HasPrefix(sc.Text(), "kernel/arch/") {
				fmt.Printf("PLACEHOLDER-INIT module %s: not for this CPU\n", sc.Text())
				loaded++
				continue
			}
			if err != nil && err != unix.EEXIST {
				fmt.Printf("PLACEHOLDER-INIT module %s: %v\n", sc.Text(), err)
				failed++
				continue
			}
			loaded++
		}
		f.Close()
	}
	var nics []string
	for i := 0; i < 50 && len(nics) == 0; i++ {
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			if len(i.HardwareAddr) == 6 {
				nics = append(nics, i.Name+"="+i.HardwareAddr.String())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	disks, _ := filepath.Glob("/sys/block/vd*")
	fmt.Printf("PLACEHOLDER-INIT pid=%d kernel=%s modules=%d failed=%d nics=%v disks=%d\n", os.Getpid(), release, loaded, failed, nics, len(disks))
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
