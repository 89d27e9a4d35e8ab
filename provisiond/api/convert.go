package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// invalidError marks a request that is wrong in itself (InvalidArgument).
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error { return &invalidError{fmt.Sprintf(format, args...)} }

// hardwareFromPB validates a hardware message and converts it.
func hardwareFromPB(h *pb.Hardware) (store.Hardware, error) {
	if h == nil {
		return store.Hardware{}, invalid("hardware is required")
	}
	out := store.Hardware{
		ID:       strings.TrimSpace(h.GetId()),
		Hostname: h.GetHostname(),
		Arch:     h.GetArch(),
		UEFI:     h.GetUefi(),
		Disks:    h.GetDisks(),
		Labels:   h.GetLabels(),
		Netboot:  store.Netboot{AllowPXE: h.GetNetboot().GetAllowPxe(), AllowWorkflow: h.GetNetboot().GetAllowWorkflow()},
	}
	if out.ID != "" {
		if err := hwspec.ID(out.ID); err != nil {
			return out, invalid("id: %v", err)
		}
	}
	if out.Hostname != "" {
		if err := hwspec.Hostname(out.Hostname); err != nil {
			return out, invalid("hostname: %v", err)
		}
	}
	if out.Arch == "" {
		out.Arch = "x86_64"
	}
	if err := hwspec.Arch(out.Arch); err != nil {
		return out, invalid("arch: %v", err)
	}
	if len(h.GetInterfaces()) == 0 {
		return out, invalid("at least one interface is required")
	}
	seen := map[string]bool{}
	for i, nic := range h.GetInterfaces() {
		mac, err := hwspec.MAC(nic.GetMac())
		if err != nil {
			return out, invalid("interfaces[%d].mac: %v", i, err)
		}
		if seen[mac] {
			return out, invalid("interfaces[%d].mac: %s is listed twice", i, mac)
		}
		seen[mac] = true
		n := store.Interface{MAC: mac, IP: nic.GetIp(), Gateway: nic.GetGateway(), NameServers: nic.GetNameServers()}
		if n.IP != "" {
			if err := hwspec.IPv4Prefix(n.IP); err != nil {
				return out, invalid("interfaces[%d].ip: %v", i, err)
			}
		}
		if n.Gateway != "" {
			if err := hwspec.Gateway(n.Gateway); err != nil {
				return out, invalid("interfaces[%d].gateway: %v", i, err)
			}
			if n.IP != "" {
				if err := hwspec.GatewayFor(n.Gateway, n.IP); err != nil {
					return out, invalid("interfaces[%d].gateway: %v", i, err)
				}
			}
		}
		for j, ns := range n.NameServers {
			if err := hwspec.NameServer(ns); err != nil {
				return out, invalid("interfaces[%d].name_servers[%d]: %v", i, j, err)
			}
		}
		out.Interfaces = append(out.Interfaces, n)
	}
	for i, d := range out.Disks {
		if err := hwspec.Disk(d); err != nil {
			return out, invalid("disks[%d]: %v", i, err)
		}
	}
	if err := hwspec.Labels(out.Labels); err != nil {
		return out, invalid("labels: %v", err)
	}
	if m := strings.TrimSpace(h.GetMetadata()); m != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(m), &obj); err != nil {
			return out, invalid("metadata: want a JSON object: %v", err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(m)); err != nil {
			return out, invalid("metadata: %v", err)
		}
		out.Metadata = buf.Bytes()
	}
	if b := h.GetBmc(); b != nil {
		out.BMC = store.BMC{
			Driver: b.GetDriver(), Address: b.GetAddress(), Port: int(b.GetPort()),
			Username: b.GetUsername(), Password: b.GetPassword(), InsecureTLS: b.GetInsecureTls(),
		}
	}
	if out.BMC.Driver == "" {
		out.BMC.Driver = "manual"
	}
	if err := hwspec.BMCDriver(out.BMC.Driver); err != nil {
		return out, invalid("bmc.driver: %v", err)
	}
	switch {
	case out.BMC.Address != "":
		if err := hwspec.BMCAddress(out.BMC.Address); err != nil {
			return out, invalid("bmc.address: %v", err)
		}
	case out.BMC.Driver != "manual":
		return out, invalid("bmc.address is required for driver %q", out.BMC.Driver)
	}
	if out.BMC.Port < 0 || out.BMC.Port > 65535 {
		return out, invalid("bmc.port %d: out of range", out.BMC.Port)
	}
	return out, nil
}

// idRE is the id rule of hwspec.ID, for template ids (server.go).
var idRE = hwspec.IDPattern

// hardwareToPB converts stored hardware for a reader. The BMC password
// never leaves the daemon: only whether one is set.
func hardwareToPB(h store.Hardware, allocated bool) *pb.Hardware {
	out := &pb.Hardware{
		Id: h.ID, Hostname: h.Hostname, Arch: h.Arch, Uefi: h.UEFI, Disks: h.Disks, Labels: h.Labels,
		Metadata: string(h.Metadata),
		Netboot:  &pb.Netboot{AllowPxe: h.Netboot.AllowPXE, AllowWorkflow: h.Netboot.AllowWorkflow},
		Bmc: &pb.BMC{
			Driver: h.BMC.Driver, Address: h.BMC.Address, Port: uint32(h.BMC.Port), Username: h.BMC.Username,
			InsecureTls: h.BMC.InsecureTLS, PasswordSet: h.BMC.Password != "",
		},
		Power:       powerToPB(h.Power),
		PowerSeenAt: ts(h.PowerSeenAt),
		Allocated:   allocated,
		CreatedAt:   ts(h.CreatedAt),
		UpdatedAt:   ts(h.UpdatedAt),
	}
	for _, nic := range h.Interfaces {
		out.Interfaces = append(out.Interfaces, &pb.Interface{Mac: nic.MAC, Ip: nic.IP, Gateway: nic.Gateway, NameServers: nic.NameServers})
	}
	return out
}

func powerToPB(s string) pb.PowerState {
	switch s {
	case "on":
		return pb.PowerState_POWER_STATE_ON
	case "off":
		return pb.PowerState_POWER_STATE_OFF
	case "unknown":
		return pb.PowerState_POWER_STATE_UNKNOWN
	}
	return pb.PowerState_POWER_STATE_UNSPECIFIED
}

var stateToPB = map[store.State]pb.State{
	store.StatePending:   pb.State_STATE_PENDING,
	store.StateBooting:   pb.State_STATE_BOOTING,
	store.StateRunning:   pb.State_STATE_RUNNING,
	store.StateSucceeded: pb.State_STATE_SUCCEEDED,
	store.StateFailed:    pb.State_STATE_FAILED,
	store.StateTimedOut:  pb.State_STATE_TIMED_OUT,
	store.StateCancelled: pb.State_STATE_CANCELLED,
}

// StateFromPB maps an API state to the store's; "" for unspecified.
func StateFromPB(s pb.State) store.State {
	for k, v := range stateToPB {
		if v == s {
			return k
		}
	}
	return ""
}

func templateToPB(t store.Template, tasks []*pb.TemplateTask) *pb.Template {
	return &pb.Template{Id: t.ID, Name: t.Name, Content: t.Content, Tasks: tasks, CreatedAt: ts(t.CreatedAt), UpdatedAt: ts(t.UpdatedAt)}
}

// WorkflowToPB converts a stored workflow; the token hash stays inside.
func WorkflowToPB(w store.Workflow) *pb.Workflow {
	out := &pb.Workflow{
		Id: w.ID, HardwareId: w.HardwareID, TemplateId: w.TemplateID, Parameters: withoutKeys(w.Parameters, w.SensitiveKeys),
		State: stateToPB[w.State], CreatedAt: ts(w.CreatedAt), StartedAt: ts(w.StartedAt), FinishedAt: ts(w.FinishedAt),
		Error: w.Error, Wipe: w.Wipe,
	}
	switch w.Kind {
	case store.KindProvision:
		out.Kind = pb.WorkflowKind_WORKFLOW_KIND_PROVISION
	case store.KindDeprovision:
		out.Kind = pb.WorkflowKind_WORKFLOW_KIND_DEPROVISION
	}
	for _, a := range w.Actions {
		out.Actions = append(out.Actions, &pb.ActionStatus{
			Task: a.Task, Name: a.Name, Image: a.Image, State: stateToPB[a.State], Attempt: int32(a.Attempt),
			StartedAt: ts(a.StartedAt), FinishedAt: ts(a.FinishedAt), Message: a.Message, OutputTail: a.OutputTail,
		})
	}
	return out
}

// withoutKeys returns params without the sensitive ones: the Admin API
// never hands a secret parameter back (the provider keeps its own copy).
func withoutKeys(params map[string]string, sensitive []string) map[string]string {
	if len(sensitive) == 0 {
		return params
	}
	out := maps.Clone(params)
	for _, k := range sensitive {
		delete(out, k)
	}
	return out
}

// MachineToPB converts a machine and, when known, its current workflow.
func MachineToPB(m store.Machine, w *store.Workflow) *pb.Machine {
	out := &pb.Machine{
		HardwareId: m.HardwareID, TemplateId: m.TemplateID, Parameters: withoutKeys(m.Parameters, m.SensitiveKeys), UserData: m.UserData,
		SshKeys: m.SSHKeys, Wipe: m.Wipe, ProvisionedAt: ts(m.ProvisionedAt), CreatedAt: ts(m.CreatedAt),
		OsReadyAt: ts(m.OSReadyAt), UserDataWriteOnly: m.UserDataWriteOnly,
	}
	if m.UserDataWriteOnly {
		out.UserData = ""
	}
	if w != nil {
		out.Workflow = WorkflowToPB(*w)
	}
	return out
}

// EventToPB converts a logged event; w, when set, is the workflow snapshot.
func EventToPB(e store.Event, w *store.Workflow) *pb.Event {
	out := &pb.Event{
		Seq: e.Seq, Time: ts(e.Time), WorkflowId: e.WorkflowID, HardwareId: e.HardwareID, Type: string(e.Type),
		State: stateToPB[store.State(e.State)], Task: e.Task, Action: e.Action, Message: e.Message,
	}
	if w != nil {
		out.Workflow = WorkflowToPB(*w)
	}
	return out
}
