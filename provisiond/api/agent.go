package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// AgentEngine is the workflow engine as the agent sees it. Every call
// takes the agent's bearer token and only ever touches that token's
// workflow. NextAction and ReportAction are not idempotent (a handed-out
// action is marked running); repeating a final report is harmless.
type AgentEngine interface {
	NextAction(ctx context.Context, token, hardwareID string) (workflow.Assignment, error)
	ReportAction(ctx context.Context, token string, r workflow.Report) error
	Heartbeat(ctx context.Context, token, hardwareID string) (stop bool, err error)
	AppendLog(ctx context.Context, token string, index int, data []byte) error
}

// AgentService implements the Agent gRPC service over the engine.
//
// Status codes the agent sees: Unauthenticated (no or wrong token: give
// up, the workflow has a new agent or is gone), PermissionDenied (token of
// another hardware), FailedPrecondition (the workflow is not running: it
// has not started or has ended), InvalidArgument (a malformed report),
// Aborted (a stale report of an earlier attempt), Unavailable/Internal
// (retry with backoff).
type AgentService struct {
	pb.UnimplementedAgentServer
	eng     AgentEngine
	log     *slog.Logger
	refusal *Refusals
}

// NewAgent returns the Agent service. Refused calls count in reg's
// provisiond_refused_calls_total{service="agent"} and are logged sampled.
func NewAgent(eng AgentEngine, log *slog.Logger, reg prometheus.Registerer) *AgentService {
	log = log.With("component", "agent-api")
	return &AgentService{eng: eng, log: log, refusal: NewRefusals(log, reg, "agent")}
}

// token returns the caller's bearer token; the token itself is never logged.
func (s *AgentService) token(ctx context.Context, method string) (string, error) {
	tok, ok := BearerToken(ctx)
	if !ok || tok == "" {
		s.refused(ctx, method, "no_token", "no bearer token")
		return "", status.Error(codes.Unauthenticated, "agent call without a bearer token: pass the bm.token of the kernel command line as \"authorization: Bearer <token>\"")
	}
	return tok, nil
}

// refused counts and (sampled) logs a refused call; reason is a fixed
// word (a metric label), why the detail.
func (s *AgentService) refused(ctx context.Context, method, reason, why string) {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	s.refusal.Refuse(ctx, reason, "method", method, "why", why, "peer", addr)
}

// agentError maps the engine's errors to status codes (errorCodes),
// counting and logging the refusals of a bad token or the wrong hardware.
func (s *AgentService) agentError(ctx context.Context, method string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, workflow.ErrUnauthenticated):
		s.refused(ctx, method, "invalid_token", "invalid token")
		return status.Error(codes.Unauthenticated, "invalid agent token: it was replaced by a newer one, or its workflow is gone")
	case errors.Is(err, workflow.ErrPermission):
		s.refused(ctx, method, "wrong_hardware", err.Error())
	}
	return statusError(agentAPI, method, err)
}

// thenToPB maps the engine's Then to the API's; "" (not done) maps to
// THEN_UNSPECIFIED.
var thenToPB = map[workflow.Then]pb.Then{
	workflow.ThenNone:     pb.Then_THEN_NONE,
	workflow.ThenReboot:   pb.Then_THEN_REBOOT,
	workflow.ThenPoweroff: pb.Then_THEN_POWEROFF,
	workflow.ThenKexec:    pb.Then_THEN_KEXEC,
}

// GetAction hands the agent its next action, or tells it the workflow is done.
func (s *AgentService) GetAction(ctx context.Context, req *pb.GetActionRequest) (*pb.GetActionResponse, error) {
	tok, err := s.token(ctx, "GetAction")
	if err != nil {
		return nil, err
	}
	as, err := s.eng.NextAction(ctx, tok, req.GetHardwareId())
	if err != nil {
		return nil, s.agentError(ctx, "get action", err)
	}
	// Then, the deprecated string, goes too: agents older than OnDone
	// read only it.
	out := &pb.GetActionResponse{WorkflowId: as.WorkflowID, Done: as.Done, OnDone: thenToPB[as.Then],
		Then: string(as.Then), //nolint:staticcheck // deprecated, still sent for older agents
	}
	if a := as.Action; a != nil {
		out.Action = &pb.Action{
			Task: a.Task, Name: a.Name, Image: a.Image, TimeoutSeconds: int64(a.Timeout / time.Second),
			Command: a.Command, Environment: a.Environment, Volumes: a.Volumes, Pid: a.PID,
			Retries: int32(a.Retries), Attempt: int32(a.Attempt), Index: int32(as.Index),
		}
	}
	return out, nil
}

// ReportAction records an action's progress or result.
func (s *AgentService) ReportAction(ctx context.Context, req *pb.ReportActionRequest) (*pb.ReportActionResponse, error) {
	tok, err := s.token(ctx, "ReportAction")
	if err != nil {
		return nil, err
	}
	state := StateFromPB(req.GetState())
	if state == "" {
		return nil, status.Error(codes.InvalidArgument, "report action: state is required")
	}
	r := workflow.Report{
		Index: int(req.GetIndex()), Task: req.GetTask(), Action: req.GetAction(), State: state,
		Message: req.GetMessage(), OutputTail: req.GetOutputTail(), Attempt: int(req.GetAttempt()),
	}
	if t := req.GetStartedAt(); t != nil {
		r.StartedAt = t.AsTime()
	}
	if t := req.GetFinishedAt(); t != nil {
		r.FinishedAt = t.AsTime()
	}
	if err := s.eng.ReportAction(ctx, tok, r); err != nil {
		return nil, s.agentError(ctx, "report action", err)
	}
	return &pb.ReportActionResponse{}, nil
}

// StreamLogs appends the chunks of action output the agent sends.
func (s *AgentService) StreamLogs(stream pb.Agent_StreamLogsServer) error {
	ctx := stream.Context()
	tok, err := s.token(ctx, "StreamLogs")
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.StreamLogsResponse{})
		}
		if err != nil {
			return err
		}
		if err := s.eng.AppendLog(ctx, tok, int(chunk.GetIndex()), chunk.GetData()); err != nil {
			return s.agentError(ctx, "stream logs", err)
		}
	}
}

// Heartbeat keeps the workflow alive; the answer says whether to stop.
func (s *AgentService) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	tok, err := s.token(ctx, "Heartbeat")
	if err != nil {
		return nil, err
	}
	stop, err := s.eng.Heartbeat(ctx, tok, req.GetHardwareId())
	if err != nil {
		return nil, s.agentError(ctx, "heartbeat", err)
	}
	return &pb.HeartbeatResponse{Cancelled: stop}, nil
}

var (
	_ pb.AgentServer = (*AgentService)(nil)
	_ AgentEngine    = (*workflow.Engine)(nil)
	_ Machines       = (*workflow.Engine)(nil)
)
