package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// env is what a command runs with.
type env struct {
	c    *client.Client
	o    *options
	out  io.Writer
	errw io.Writer
}

// json prints m as indented JSON (protojson field names, enums by name).
func (e *env) json(m proto.Message) error {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = e.out.Write(buf.Bytes())
	return err
}

// table is an aligned table for humans.
type table struct{ tw *tabwriter.Writer }

func (e *env) table(header ...string) *table {
	t := &table{tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	_, _ = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// kv prints "key: value" lines, aligned.
func (e *env) kv(pairs ...string) error {
	tw := tabwriter.NewWriter(e.out, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		v := pairs[i+1]
		if v == "" {
			v = "-"
		}
		_, _ = fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], v)
	}
	return tw.Flush()
}

// timeFormat is how times are shown: local, to the second.
const timeFormat = "2006-01-02 15:04:05"

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil || (t.GetSeconds() == 0 && t.GetNanos() == 0) {
		return ""
	}
	return t.AsTime().Local().Format(timeFormat)
}

func fmtDuration(from, to *timestamppb.Timestamp) string {
	if from == nil || to == nil {
		return ""
	}
	return to.AsTime().Sub(from.AsTime()).Round(time.Second).String()
}

func stateName(s pb.State) string {
	if s == pb.State_STATE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func powerName(s pb.PowerState) string {
	if s == pb.PowerState_POWER_STATE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "POWER_STATE_"))
}

func kindName(k pb.WorkflowKind) string {
	if k == pb.WorkflowKind_WORKFLOW_KIND_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "WORKFLOW_KIND_"))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func setUnset(b bool) string {
	if b {
		return "set"
	}
	return "unset"
}

func sortedMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func netbootName(n *pb.Netboot) string {
	switch {
	case n.GetAllowPxe() && n.GetAllowWorkflow():
		return "pxe+workflow"
	case n.GetAllowPxe():
		return "pxe"
	}
	return "off"
}

// ---------------------------------------------------------------- hardware

func (e *env) hardware(ctx context.Context, args []string) error {
	if len(args) == 1 && len(e.o.labels) > 0 {
		return errors.New("--label filters the list: give no hardware id with it")
	}
	if len(args) == 1 {
		h, err := e.c.GetHardware(ctx, &pb.GetHardwareRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if e.o.output == "json" {
			return e.json(h)
		}
		return e.showHardware(h)
	}
	resp, err := e.c.ListHardware(ctx, &pb.ListHardwareRequest{Labels: e.o.labels})
	if err != nil {
		return err
	}
	if e.o.output == "json" {
		return e.json(resp)
	}
	t := e.table("ID", "HOSTNAME", "MAC", "IP", "ARCH", "BMC", "POWER", "MACHINE", "NETBOOT")
	for _, h := range resp.GetHardware() {
		var mac, ip string
		if nics := h.GetInterfaces(); len(nics) > 0 {
			mac, ip = nics[0].GetMac(), nics[0].GetIp()
		}
		t.row(h.GetId(), h.GetHostname(), mac, ip, h.GetArch(), bmcName(h.GetBmc()), powerName(h.GetPower()), yesNo(h.GetAllocated()), netbootName(h.GetNetboot()))
	}
	return t.flush()
}

func bmcName(b *pb.BMC) string {
	if b.GetDriver() == "" || b.GetDriver() == "manual" {
		return b.GetDriver()
	}
	if b.GetPort() != 0 {
		return fmt.Sprintf("%s:%s:%d", b.GetDriver(), b.GetAddress(), b.GetPort())
	}
	return b.GetDriver() + ":" + b.GetAddress()
}

func (e *env) showHardware(h *pb.Hardware) error {
	b := h.GetBmc()
	pairs := []string{
		"ID", h.GetId(), "Hostname", h.GetHostname(), "Arch", h.GetArch(), "UEFI", yesNo(h.GetUefi()),
		"Disks", strings.Join(h.GetDisks(), ","), "Labels", sortedMap(h.GetLabels()),
		"BMC driver", b.GetDriver(), "BMC address", b.GetAddress(),
	}
	if b.GetPort() != 0 {
		pairs = append(pairs, "BMC port", fmt.Sprint(b.GetPort()))
	}
	pairs = append(pairs, "BMC username", b.GetUsername(), "BMC password", setUnset(b.GetPasswordSet()),
		"BMC insecure TLS", yesNo(b.GetInsecureTls()),
		"Power", powerName(h.GetPower()), "Power seen", fmtTime(h.GetPowerSeenAt()),
		"Machine", yesNo(h.GetAllocated()), "Netboot", netbootName(h.GetNetboot()),
		"Created", fmtTime(h.GetCreatedAt()), "Updated", fmtTime(h.GetUpdatedAt()))
	for i, n := range h.GetInterfaces() {
		pairs = append(pairs, fmt.Sprintf("Interface %d", i), strings.Join(nonEmpty(n.GetMac(), n.GetIp(), prefixed("gw ", n.GetGateway()), prefixed("dns ", strings.Join(n.GetNameServers(), ","))), " "))
	}
	if md := h.GetMetadata(); md != "" && md != "{}" {
		pairs = append(pairs, "Metadata", md)
	}
	return e.kv(pairs...)
}

func nonEmpty(ss ...string) []string {
	return slices.DeleteFunc(ss, func(s string) bool { return s == "" })
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// ---------------------------------------------------------------- machines

func (e *env) machines(ctx context.Context, args []string) error {
	if len(args) == 1 {
		m, err := e.c.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: args[0]})
		if err != nil {
			return err
		}
		if !e.o.showUserData && m.GetUserData() != "" {
			m.UserData = fmt.Sprintf("(%d bytes; --show-user-data prints it)", len(m.GetUserData()))
		}
		if e.o.output == "json" {
			return e.json(m)
		}
		return e.showMachine(m)
	}
	resp, err := e.c.ListMachines(ctx, &pb.ListMachinesRequest{})
	if err != nil {
		return err
	}
	for _, m := range resp.GetMachines() {
		if m.GetUserData() != "" {
			m.UserData = fmt.Sprintf("(%d bytes; provisiond ctl machines %s --show-user-data prints it)", len(m.GetUserData()), m.GetHardwareId())
		}
	}
	if e.o.output == "json" {
		return e.json(resp)
	}
	t := e.table("HARDWARE", "TEMPLATE", "WORKFLOW", "KIND", "STATE", "ACTIONS", "PROVISIONED")
	for _, m := range resp.GetMachines() {
		w := m.GetWorkflow()
		t.row(m.GetHardwareId(), m.GetTemplateId(), w.GetId(), kindName(w.GetKind()), stateName(w.GetState()), actionCount(w), fmtTime(m.GetProvisionedAt()))
	}
	return t.flush()
}

// actionCount is "done/all".
func actionCount(w *pb.Workflow) string {
	if w == nil {
		return ""
	}
	done := 0
	for _, a := range w.GetActions() {
		if a.GetState() == pb.State_STATE_SUCCEEDED {
			done++
		}
	}
	return fmt.Sprintf("%d/%d", done, len(w.GetActions()))
}

func (e *env) showMachine(m *pb.Machine) error {
	w := m.GetWorkflow()
	if err := e.kv(
		"Hardware", m.GetHardwareId(), "Template", m.GetTemplateId(), "Parameters", sortedMap(m.GetParameters()),
		"SSH keys", fmt.Sprint(len(m.GetSshKeys())), "Wipe", m.GetWipe(), "User-data", m.GetUserData(),
		"Created", fmtTime(m.GetCreatedAt()), "Provisioned", fmtTime(m.GetProvisionedAt()),
		"Workflow", w.GetId(), "Kind", kindName(w.GetKind()), "State", stateName(w.GetState()),
		"Started", fmtTime(w.GetStartedAt()), "Finished", fmtTime(w.GetFinishedAt()), "Error", w.GetError(),
	); err != nil {
		return err
	}
	if len(w.GetActions()) == 0 {
		return nil
	}
	_, _ = fmt.Fprintln(e.out)
	return e.actions(w)
}

func (e *env) actions(w *pb.Workflow) error {
	t := e.table("TASK", "ACTION", "STATE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE")
	for _, a := range w.GetActions() {
		attempt := ""
		if a.GetAttempt() > 0 {
			attempt = fmt.Sprint(a.GetAttempt())
		}
		t.row(a.GetTask(), a.GetName(), stateName(a.GetState()), attempt, fmtTime(a.GetStartedAt()), fmtDuration(a.GetStartedAt(), a.GetFinishedAt()), oneLine(a.GetMessage()))
	}
	return t.flush()
}

// oneLine keeps a table cell on its line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// ---------------------------------------------------------------- templates

func (e *env) templates(ctx context.Context, args []string) error {
	if len(args) == 1 {
		t, err := e.c.GetTemplate(ctx, &pb.GetTemplateRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if e.o.output == "json" {
			return e.json(t)
		}
		if err := e.kv("ID", t.GetId(), "Name", t.GetName(), "Tasks", taskSummary(t.GetTasks()),
			"Created", fmtTime(t.GetCreatedAt()), "Updated", fmtTime(t.GetUpdatedAt())); err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.out, "\n%s", strings.TrimRight(t.GetContent(), "\n")+"\n")
		return err
	}
	resp, err := e.c.ListTemplates(ctx, &pb.ListTemplatesRequest{})
	if err != nil {
		return err
	}
	if e.o.output == "json" {
		return e.json(resp)
	}
	t := e.table("ID", "NAME", "TASKS", "UPDATED")
	for _, tpl := range resp.GetTemplates() {
		t.row(tpl.GetId(), tpl.GetName(), taskSummary(tpl.GetTasks()), fmtTime(tpl.GetUpdatedAt()))
	}
	return t.flush()
}

// taskSummary is "task(action,action) task(...)".
func taskSummary(ts []*pb.TemplateTask) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, t.GetName()+"("+strings.Join(t.GetActions(), ",")+")")
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------- workflows

func (e *env) workflows(ctx context.Context, args []string) error {
	resp, err := e.c.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: args[0]})
	if err != nil {
		return err
	}
	if e.o.output == "json" {
		return e.json(resp)
	}
	t := e.table("ID", "KIND", "STATE", "TEMPLATE", "ACTIONS", "CREATED", "FINISHED", "ERROR")
	for _, w := range resp.GetWorkflows() {
		t.row(w.GetId(), kindName(w.GetKind()), stateName(w.GetState()), w.GetTemplateId(), actionCount(w), fmtTime(w.GetCreatedAt()), fmtTime(w.GetFinishedAt()), oneLine(w.GetError()))
	}
	return t.flush()
}

// ---------------------------------------------------------------- events

// resolveWorkflow turns a hardware id into the id of its machine's current
// workflow, or its latest one when no machine holds it (also once the
// hardware is deleted: provisiond keeps its workflows for --retention);
// any other id is taken for a workflow id.
func (e *env) resolveWorkflow(ctx context.Context, id string) (hardwareID, workflowID string, err error) {
	_, err = e.c.GetHardware(ctx, &pb.GetHardwareRequest{Id: id})
	if status.Code(err) == codes.NotFound {
		if ws, err := e.c.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: id}); err == nil && len(ws.GetWorkflows()) > 0 {
			return id, ws.GetWorkflows()[len(ws.GetWorkflows())-1].GetId(), nil
		}
		return "", id, nil
	}
	if err != nil {
		return "", "", err
	}
	m, err := e.c.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
	switch {
	case err == nil && m.GetWorkflow().GetId() != "":
		return id, m.GetWorkflow().GetId(), nil
	case err != nil && status.Code(err) != codes.NotFound:
		return "", "", err
	}
	ws, err := e.c.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: id})
	if err != nil {
		return "", "", err
	}
	if len(ws.GetWorkflows()) == 0 {
		return "", "", fmt.Errorf("hardware %s has no workflows", id)
	}
	return id, ws.GetWorkflows()[len(ws.GetWorkflows())-1].GetId(), nil
}

// eventFormat is one event line: time, type, state, action, message.
const eventFormat = "%-19s  %-8s  %-10s  %-24s  %s\n"

func (e *env) events(ctx context.Context, args []string) error {
	hwID, wfID, err := e.resolveWorkflow(ctx, args[0])
	if err != nil {
		return err
	}
	if e.o.output == "table" {
		_, _ = fmt.Fprintf(e.out, eventFormat, "TIME", "TYPE", "STATE", "ACTION", "MESSAGE")
	}
	// provisiond ends the stream once the workflow is over (TrustEnd); a
	// broken stream (provisiond restarted, the network broke) is followed
	// again.
	f, err := client.Follow(ctx, e.c, client.Watch{
		HardwareID: hwID, WorkflowID: wfID, NoFollow: !e.o.follow, TrustEnd: true, RetryWait: time.Second,
		OnEvent: e.printEvent,
		OnFollowAgain: func(err error) {
			_, _ = fmt.Fprintf(e.errw, "provisiond ctl: stream of workflow %s broke (%s); following again\n", wfID, status.Convert(err).Message())
		},
	})
	if err != nil {
		return err
	}
	last := f.Workflow
	if !e.o.follow {
		return nil
	}
	if last == nil {
		w, err := e.c.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: hwID})
		if err == nil {
			for _, x := range w.GetWorkflows() {
				if x.GetId() == wfID {
					last = x
				}
			}
		}
	}
	switch s := last.GetState(); s {
	case pb.State_STATE_SUCCEEDED:
		return nil
	case pb.State_STATE_UNSPECIFIED:
		return fmt.Errorf("workflow %s: the stream ended without telling its state", wfID)
	default:
		msg := fmt.Sprintf("workflow %s %s", wfID, stateName(s))
		if last.GetError() != "" {
			msg += ": " + last.GetError()
		}
		return &ExitError{Msg: msg}
	}
}

// ExitError is a workflow that ended other than succeeded: the command
// worked, the workflow did not.
type ExitError struct{ Msg string }

func (e *ExitError) Error() string { return e.Msg }

func (e *env) printEvent(ev *pb.Event) error {
	if e.o.output == "json" {
		ev = proto.CloneOf(ev)
		ev.Workflow = nil // a snapshot per line is noise for scripts; `machines ID -o json` has it
		raw, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = e.out.Write(buf.Bytes())
		return err
	}
	action := ev.GetAction()
	if ev.GetTask() != "" && action != "" {
		action = ev.GetTask() + "/" + action
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	line := fmt.Sprintf(eventFormat, fmtTime(ev.GetTime()), dash(ev.GetType()), dash(stateName(ev.GetState())), dash(action), oneLine(ev.GetMessage()))
	_, err := io.WriteString(e.out, strings.TrimRight(line, " \n")+"\n")
	return err
}

// ---------------------------------------------------------------- power

var powerActions = map[string]pb.PowerAction{
	"on": pb.PowerAction_POWER_ACTION_ON, "off": pb.PowerAction_POWER_ACTION_OFF,
	"soft-off": pb.PowerAction_POWER_ACTION_SOFT_OFF, "cycle": pb.PowerAction_POWER_ACTION_CYCLE,
	"reset": pb.PowerAction_POWER_ACTION_RESET,
}

func (e *env) power(ctx context.Context, args []string) error {
	var ps *pb.PowerStatus
	var err error
	if len(args) == 2 {
		ps, err = e.c.SetPower(ctx, &pb.SetPowerRequest{HardwareId: args[0], Action: powerActions[args[1]]})
	} else {
		ps, err = e.c.GetPower(ctx, &pb.GetPowerRequest{HardwareId: args[0], Refresh: e.o.refresh})
	}
	if err != nil {
		return err
	}
	if e.o.output == "json" {
		return e.json(ps)
	}
	t := e.table("HARDWARE", "POWER", "SEEN")
	t.row(ps.GetHardwareId(), powerName(ps.GetState()), fmtTime(ps.GetSeenAt()))
	return t.flush()
}
