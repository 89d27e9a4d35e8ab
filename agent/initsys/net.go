package initsys

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// BootNIC picks the interface to bring up: the one with mac when given,
// else the first non-loopback interface with a hardware address.
func BootNIC(mac net.HardwareAddr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) == 0 {
			continue
		}
		if mac == nil || bytes.Equal(i.HardwareAddr, mac) {
			return &i, nil
		}
	}
	if mac != nil {
		return nil, fmt.Errorf("no interface with MAC %s", mac)
	}
	return nil, errors.New("no network interface besides loopback (is its driver loaded?)")
}

// NetUp brings ifc up, gets a lease over DHCP (retrying with backoff until
// ctx ends) and configures the address, the default route and
// /etc/resolv.conf. It returns the lease.
func NetUp(ctx context.Context, log *slog.Logger, ifc *net.Interface) (*nclient4.Lease, error) {
	log = log.With("interface", ifc.Name, "mac", ifc.HardwareAddr.String())
	if err := setLinkUp(ifc.Name); err != nil {
		return nil, err
	}
	delay := time.Second
	for {
		lease, err := dhcpOnce(ctx, ifc.Name)
		if err == nil {
			if err := configure(ifc, lease); err != nil {
				return nil, err
			}
			ack := lease.ACK
			log.Info("network up", "ip", ack.YourIPAddr, "mask", net.IP(ack.SubnetMask()), "router", ack.Router(), "dns", ack.DNS(), "server", ack.ServerIPAddr)
			return lease, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("DHCP failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

func dhcpOnce(ctx context.Context, ifname string) (*nclient4.Lease, error) {
	c, err := nclient4.New(ifname, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("DHCP client on %s: %w", ifname, err)
	}
	defer func() { _ = c.Close() }() // the lease is in hand or the error is what counts
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lease, err := c.Request(rctx)
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", ifname, err)
	}
	return lease, nil
}

func configure(ifc *net.Interface, lease *nclient4.Lease) error {
	ack := lease.ACK
	ip := ack.YourIPAddr.To4()
	if ip == nil {
		return fmt.Errorf("DHCP lease without an IPv4 address")
	}
	ones, _ := net.IPMask(ack.SubnetMask()).Size()
	if ack.SubnetMask() == nil {
		ones = 24
	}
	if err := addAddr(ifc.Index, ip, ones); err != nil {
		return fmt.Errorf("add %s/%d to %s: %w", ip, ones, ifc.Name, err)
	}
	if r := ack.Router(); len(r) > 0 && r[0].To4() != nil {
		if err := addDefaultRoute(ifc.Index, r[0].To4()); err != nil {
			return fmt.Errorf("default route via %s: %w", r[0], err)
		}
	}
	var resolv strings.Builder
	for _, d := range ack.DNS() {
		fmt.Fprintf(&resolv, "nameserver %s\n", d)
	}
	if resolv.Len() > 0 {
		if err := os.MkdirAll("/etc", 0o755); err != nil {
			return fmt.Errorf("make /etc: %w", err)
		}
		if err := os.WriteFile("/etc/resolv.conf", []byte(resolv.String()), 0o644); err != nil {
			return fmt.Errorf("write /etc/resolv.conf: %w", err)
		}
	}
	return nil
}

func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }() // an ioctl socket: closing it loses nothing
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// rtattr appends a netlink route attribute.
func rtattr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func addAddr(index int, ip net.IP, prefix int) error {
	msg := []byte{unix.AF_INET, byte(prefix), 0, unix.RT_SCOPE_UNIVERSE}
	msg = binary.NativeEndian.AppendUint32(msg, uint32(index))
	msg = rtattr(msg, unix.IFA_LOCAL, ip)
	msg = rtattr(msg, unix.IFA_ADDRESS, ip)
	bcast := make(net.IP, 4)
	mask := net.CIDRMask(prefix, 32)
	for i := range bcast {
		bcast[i] = ip[i] | ^mask[i]
	}
	msg = rtattr(msg, unix.IFA_BROADCAST, bcast)
	return netlinkDo(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

func addDefaultRoute(index int, gw net.IP) error {
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	msg := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	msg = rtattr(msg, unix.RTA_GATEWAY, gw)
	msg = rtattr(msg, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(index)))
	return netlinkDo(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// netlinkDo sends one rtnetlink request and waits for its acknowledgement.
func netlinkDo(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	// The request is acknowledged (or failed) before the socket closes.
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	const seq = 1
	req := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	req = binary.NativeEndian.AppendUint16(req, typ)
	req = binary.NativeEndian.AppendUint16(req, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	req = binary.NativeEndian.AppendUint32(req, seq)
	req = binary.NativeEndian.AppendUint32(req, 0)
	req = append(req, body...)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

// Interface is a network interface.
type Interface = net.Interface
