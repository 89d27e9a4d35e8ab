package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"
)

// NormalizeMAC returns mac in lower-case colon form, or an error.
func NormalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("invalid MAC address %q", mac)
	}
	return hw.String(), nil
}

// addrOf returns the address part of "a.b.c.d/n" or "a.b.c.d".
func addrOf(ip string) (string, bool) {
	if ip == "" {
		return "", false
	}
	if p, err := netip.ParsePrefix(ip); err == nil {
		return p.Addr().String(), true
	}
	if a, err := netip.ParseAddr(ip); err == nil {
		return a.String(), true
	}
	return "", false
}

// ---------------------------------------------------------------- hardware

// Hardware returns the hardware with id.
func (t *Tx) Hardware(id string) (Hardware, error) {
	h, err := get[Hardware](t.tx, bHardware, id, "hardware")
	if err == nil {
		err = t.s.openHardware(&h)
	}
	return h, err
}

// HardwareByMAC returns the hardware with an interface of that MAC.
func (t *Tx) HardwareByMAC(mac string) (Hardware, error) {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return Hardware{}, fmt.Errorf("hardware with MAC %q: %w", mac, ErrNotFound)
	}
	id, ok := lookup(t.tx, bHWByMAC, m)
	if !ok {
		return Hardware{}, fmt.Errorf("hardware with MAC %s: %w", m, ErrNotFound)
	}
	return t.Hardware(id)
}

// HardwareByMACRaw is HardwareByMAC without the decoding: it returns the
// stored encoding of the record, valid only until the transaction ends
// (copy it to keep it). DecodeHardware decodes it. It is for the DHCP
// server's per-packet path: the server keeps what it derived from a record
// and compares the raw bytes to tell whether the record changed, so a
// packet costs a lookup and a compare rather than a JSON decode.
func (t *Tx) HardwareByMACRaw(mac string) ([]byte, error) {
	m := mac
	if !isNormalMAC(mac) {
		var err error
		if m, err = NormalizeMAC(mac); err != nil {
			return nil, fmt.Errorf("hardware with MAC %q: %w", mac, ErrNotFound)
		}
	}
	id := t.tx.Bucket(bHWByMAC).Get([]byte(m))
	if id == nil {
		return nil, fmt.Errorf("hardware with MAC %s: %w", m, ErrNotFound)
	}
	raw := t.tx.Bucket(bHardware).Get(id)
	if raw == nil {
		return nil, fmt.Errorf("hardware %q: %w", id, ErrNotFound)
	}
	return raw, nil
}

// DecodeHardware decodes a record HardwareByMACRaw returned. It has no
// secrets key: a sealed BMC password comes back empty.
func DecodeHardware(raw []byte) (Hardware, error) {
	var h Hardware
	if err := json.Unmarshal(raw, &h); err != nil {
		return Hardware{}, fmt.Errorf("decode hardware: %w", err)
	}
	clearSealed(&h)
	return h, nil
}

// isNormalMAC reports whether mac is already in NormalizeMAC's form
// (six lower-case hex pairs joined by colons), which net.HardwareAddr's
// String gives; it spares the DHCP path a parse and an allocation.
func isNormalMAC(mac string) bool {
	if len(mac) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		c := mac[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HardwareByIP returns the hardware with an interface of that address.
func (t *Tx) HardwareByIP(ip string) (Hardware, error) {
	a, _ := addrOf(ip)
	id, ok := lookup(t.tx, bHWByIP, a)
	if !ok {
		return Hardware{}, fmt.Errorf("hardware with IP %s: %w", ip, ErrNotFound)
	}
	return t.Hardware(id)
}

// ListHardware returns all hardware ordered by id.
func (t *Tx) ListHardware() ([]Hardware, error) {
	out, err := list[Hardware](t.tx, bHardware, "hardware")
	for i := range out {
		if err == nil {
			err = t.s.openHardware(&out[i])
		}
	}
	return out, err
}

// CountHardware is the number of hardware records, read without decoding
// them.
func (t *Tx) CountHardware() int { return t.tx.Bucket(bHardware).Stats().KeyN }

// CreateHardware stores new hardware; its id, MACs and IPs must be free.
func (t *Tx) CreateHardware(h Hardware) error {
	if h.ID == "" {
		return fmt.Errorf("create hardware: empty id")
	}
	if t.tx.Bucket(bHardware).Get([]byte(h.ID)) != nil {
		return fmt.Errorf("hardware %q: %w", h.ID, ErrConflict)
	}
	return t.putHardware(h, nil)
}

// UpdateHardware replaces stored hardware and its index entries.
func (t *Tx) UpdateHardware(h Hardware) error {
	old, err := t.Hardware(h.ID)
	if err != nil {
		return err
	}
	return t.putHardware(h, &old)
}

func (t *Tx) putHardware(h Hardware, old *Hardware) error {
	if old != nil {
		t.unindexHardware(*old)
	}
	macs, ips := t.tx.Bucket(bHWByMAC), t.tx.Bucket(bHWByIP)
	for i, nic := range h.Interfaces {
		m, err := NormalizeMAC(nic.MAC)
		if err != nil {
			return err
		}
		h.Interfaces[i].MAC = m
		if owner := macs.Get([]byte(m)); owner != nil && string(owner) != h.ID {
			return fmt.Errorf("MAC %s is used by hardware %q: %w", m, owner, ErrConflict)
		}
		if err := macs.Put([]byte(m), []byte(h.ID)); err != nil {
			return err
		}
		if a, ok := addrOf(nic.IP); ok {
			if owner := ips.Get([]byte(a)); owner != nil && string(owner) != h.ID {
				return fmt.Errorf("IP %s is used by hardware %q: %w", a, owner, ErrConflict)
			}
			if err := ips.Put([]byte(a), []byte(h.ID)); err != nil {
				return err
			}
		}
	}
	return put(t.tx, bHardware, h.ID, t.s.sealHardware(h))
}

func (t *Tx) unindexHardware(h Hardware) {
	for _, nic := range h.Interfaces {
		if m, err := NormalizeMAC(nic.MAC); err == nil {
			_ = t.tx.Bucket(bHWByMAC).Delete([]byte(m))
		}
		if a, ok := addrOf(nic.IP); ok {
			_ = t.tx.Bucket(bHWByIP).Delete([]byte(a))
		}
	}
}

// DeleteHardware removes hardware; ErrInUse while a machine holds it.
func (t *Tx) DeleteHardware(id string) error {
	h, err := t.Hardware(id)
	if err != nil {
		return err
	}
	if t.tx.Bucket(bMachines).Get([]byte(id)) != nil {
		return fmt.Errorf("hardware %q is held by a machine: %w", id, ErrInUse)
	}
	t.unindexHardware(h)
	return t.tx.Bucket(bHardware).Delete([]byte(id))
}

// ---------------------------------------------------------------- templates

// Template returns the template with id.
func (t *Tx) Template(id string) (Template, error) {
	return get[Template](t.tx, bTemplates, id, "template")
}

// TemplateByName returns the template called name.
func (t *Tx) TemplateByName(name string) (Template, error) {
	id, ok := lookup(t.tx, bTplByName, name)
	if !ok {
		return Template{}, fmt.Errorf("template named %q: %w", name, ErrNotFound)
	}
	return t.Template(id)
}

// ListTemplates returns all templates ordered by id.
func (t *Tx) ListTemplates() ([]Template, error) { return list[Template](t.tx, bTemplates, "template") }

// CreateTemplate stores a new template; id and name must be free.
func (t *Tx) CreateTemplate(tpl Template) error {
	if tpl.ID == "" || tpl.Name == "" {
		return fmt.Errorf("create template: empty id or name")
	}
	if t.tx.Bucket(bTemplates).Get([]byte(tpl.ID)) != nil {
		return fmt.Errorf("template %q: %w", tpl.ID, ErrConflict)
	}
	return t.putTemplate(tpl, "")
}

// UpdateTemplate replaces a stored template.
func (t *Tx) UpdateTemplate(tpl Template) error {
	old, err := t.Template(tpl.ID)
	if err != nil {
		return err
	}
	return t.putTemplate(tpl, old.Name)
}

func (t *Tx) putTemplate(tpl Template, oldName string) error {
	names := t.tx.Bucket(bTplByName)
	if owner := names.Get([]byte(tpl.Name)); owner != nil && string(owner) != tpl.ID {
		return fmt.Errorf("template name %q is used by template %q: %w", tpl.Name, owner, ErrConflict)
	}
	if oldName != "" && oldName != tpl.Name {
		if err := names.Delete([]byte(oldName)); err != nil {
			return err
		}
	}
	if err := names.Put([]byte(tpl.Name), []byte(tpl.ID)); err != nil {
		return err
	}
	return put(t.tx, bTemplates, tpl.ID, tpl)
}

// DeleteTemplate removes a template; ErrInUse while a machine uses it.
func (t *Tx) DeleteTemplate(id string) error {
	tpl, err := t.Template(id)
	if err != nil {
		return err
	}
	c := t.tx.Bucket(bMachByTpl).Cursor()
	prefix := []byte(id + "/")
	if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return fmt.Errorf("template %q is used by machine %q: %w", id, k[len(prefix):], ErrInUse)
	}
	if err := t.tx.Bucket(bTplByName).Delete([]byte(tpl.Name)); err != nil {
		return err
	}
	return t.tx.Bucket(bTemplates).Delete([]byte(id))
}

// ---------------------------------------------------------------- machines

// Machine returns the machine on hardware id.
func (t *Tx) Machine(hardwareID string) (Machine, error) {
	m, err := get[Machine](t.tx, bMachines, hardwareID, "machine")
	if err == nil {
		err = t.s.openMachine(&m)
	}
	return m, err
}

// ListMachines returns all machines ordered by hardware id.
func (t *Tx) ListMachines() ([]Machine, error) {
	out, err := list[Machine](t.tx, bMachines, "machine")
	for i := range out {
		if err == nil {
			err = t.s.openMachine(&out[i])
		}
	}
	return out, err
}

// PutMachine creates or replaces a machine. Its hardware and template must exist.
func (t *Tx) PutMachine(m Machine) error {
	if _, err := t.Hardware(m.HardwareID); err != nil {
		return err
	}
	if _, err := t.Template(m.TemplateID); err != nil {
		return err
	}
	if old, err := t.Machine(m.HardwareID); err == nil {
		_ = t.tx.Bucket(bMachByTpl).Delete([]byte(old.TemplateID + "/" + old.HardwareID))
	}
	if err := t.tx.Bucket(bMachByTpl).Put([]byte(m.TemplateID+"/"+m.HardwareID), nil); err != nil {
		return err
	}
	return put(t.tx, bMachines, m.HardwareID, t.s.sealMachine(m))
}

// DeleteMachine removes the machine on hardware id, freeing the hardware.
func (t *Tx) DeleteMachine(hardwareID string) error {
	m, err := t.Machine(hardwareID)
	if err != nil {
		return err
	}
	_ = t.tx.Bucket(bMachByTpl).Delete([]byte(m.TemplateID + "/" + m.HardwareID))
	return t.tx.Bucket(bMachines).Delete([]byte(hardwareID))
}

// ---------------------------------------------------------------- workflows

// Workflow returns the workflow with id.
func (t *Tx) Workflow(id string) (Workflow, error) {
	return get[Workflow](t.tx, bWorkflows, id, "workflow")
}

// ListWorkflows returns all workflows.
func (t *Tx) ListWorkflows() ([]Workflow, error) { return list[Workflow](t.tx, bWorkflows, "workflow") }

// WorkflowsOf returns the workflows of one hardware, oldest first.
func (t *Tx) WorkflowsOf(hardwareID string) ([]Workflow, error) {
	var out []Workflow
	c := t.tx.Bucket(bWFByHW).Cursor()
	prefix := []byte(hardwareID + "/")
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		w, err := t.Workflow(string(k[len(prefix):]))
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// PutWorkflow creates or replaces a workflow.
func (t *Tx) PutWorkflow(w Workflow) error {
	if w.ID == "" || w.HardwareID == "" {
		return fmt.Errorf("put workflow: empty id or hardware id")
	}
	if err := t.tx.Bucket(bWFByHW).Put([]byte(w.HardwareID+"/"+w.ID), nil); err != nil {
		return err
	}
	return put(t.tx, bWorkflows, w.ID, w)
}

// DeleteWorkflow removes a workflow and its index entry (its events stay).
func (t *Tx) DeleteWorkflow(id string) error {
	w, err := t.Workflow(id)
	if err != nil {
		return err
	}
	_ = t.tx.Bucket(bWFByHW).Delete([]byte(w.HardwareID + "/" + w.ID))
	return t.tx.Bucket(bWorkflows).Delete([]byte(id))
}

// ---------------------------------------------------------------- leases

// Lease returns the lease of a MAC.
func (t *Tx) Lease(mac string) (Lease, error) {
	m := mac
	if !isNormalMAC(mac) {
		var err error
		if m, err = NormalizeMAC(mac); err != nil {
			return Lease{}, fmt.Errorf("lease of %q: %w", mac, ErrNotFound)
		}
	}
	return get[Lease](t.tx, bLeases, m, "lease")
}

// LeaseRaw is Lease without the decoding: it returns the stored encoding
// of the lease of mac, valid only until the transaction ends; DecodeLease
// decodes it. It serves the DHCP server's per-packet path, as
// HardwareByMACRaw does.
func (t *Tx) LeaseRaw(mac string) ([]byte, error) {
	m := mac
	if !isNormalMAC(mac) {
		var err error
		if m, err = NormalizeMAC(mac); err != nil {
			return nil, fmt.Errorf("lease of %q: %w", mac, ErrNotFound)
		}
	}
	raw := t.tx.Bucket(bLeases).Get([]byte(m))
	if raw == nil {
		return nil, fmt.Errorf("lease %q: %w", m, ErrNotFound)
	}
	return raw, nil
}

// DecodeLease decodes a lease LeaseRaw returned.
func DecodeLease(raw []byte) (Lease, error) {
	var l Lease
	if err := json.Unmarshal(raw, &l); err != nil {
		return Lease{}, fmt.Errorf("decode lease: %w", err)
	}
	return l, nil
}

// LeaseByIP returns the lease of an address.
func (t *Tx) LeaseByIP(ip string) (Lease, error) {
	mac, ok := lookup(t.tx, bLeaseByIP, ip)
	if !ok {
		return Lease{}, fmt.Errorf("lease of IP %s: %w", ip, ErrNotFound)
	}
	return t.Lease(mac)
}

// ListLeases returns all leases.
func (t *Tx) ListLeases() ([]Lease, error) { return list[Lease](t.tx, bLeases, "lease") }

// PutLease records a lease; the address must not be leased to another MAC.
func (t *Tx) PutLease(l Lease) error {
	m, err := NormalizeMAC(l.MAC)
	if err != nil {
		return err
	}
	l.MAC = m
	byIP := t.tx.Bucket(bLeaseByIP)
	if owner := byIP.Get([]byte(l.IP)); owner != nil && string(owner) != m {
		return fmt.Errorf("IP %s is leased to %s: %w", l.IP, owner, ErrConflict)
	}
	if old, err := t.Lease(m); err == nil && old.IP != l.IP {
		_ = byIP.Delete([]byte(old.IP))
	}
	if err := byIP.Put([]byte(l.IP), []byte(m)); err != nil {
		return err
	}
	return put(t.tx, bLeases, m, l)
}

// DeleteLease removes the lease of a MAC.
func (t *Tx) DeleteLease(mac string) error {
	l, err := t.Lease(mac)
	if err != nil {
		return err
	}
	_ = t.tx.Bucket(bLeaseByIP).Delete([]byte(l.IP))
	return t.tx.Bucket(bLeases).Delete([]byte(l.MAC))
}

// ---------------------------------------------------------------- events

// AppendEvent adds e to the log with the next sequence number, which it
// returns. Time defaults to now.
func (t *Tx) AppendEvent(e Event) (uint64, error) {
	b := t.tx.Bucket(bEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	e.Seq = seq
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("encode event: %w", err)
	}
	if err := b.Put(u64(seq), raw); err != nil {
		return 0, err
	}
	if e.WorkflowID != "" {
		key := append([]byte(e.WorkflowID+"/"), u64(seq)...)
		if err := t.tx.Bucket(bEventsByWF).Put(key, nil); err != nil {
			return 0, err
		}
	}
	t.appended = true
	return seq, nil
}

// Events returns the events of a workflow with a sequence number above
// after, oldest first. An empty workflow id means all events.
func (t *Tx) Events(workflowID string, after uint64) ([]Event, error) {
	var out []Event
	decode := func(raw []byte) error {
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		out = append(out, e)
		return nil
	}
	events := t.tx.Bucket(bEvents)
	if workflowID == "" {
		c := events.Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
			if err := decode(v); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	prefix := []byte(workflowID + "/")
	c := t.tx.Bucket(bEventsByWF).Cursor()
	for k, _ := c.Seek(append(append([]byte{}, prefix...), u64(after+1)...)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		seq := k[len(prefix):]
		if err := decode(events.Get(seq)); err != nil {
			return nil, err
		}
	}
	return out, nil
}
