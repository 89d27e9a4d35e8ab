package store

import (
	"encoding/json"
	"time"
)

// Hardware is a physical server that provisiond knows.
type Hardware struct {
	ID         string            `json:"id"`
	Hostname   string            `json:"hostname,omitempty"`
	Interfaces []Interface       `json:"interfaces,omitempty"`
	Arch       string            `json:"arch,omitempty"`
	UEFI       bool              `json:"uefi,omitempty"`
	Disks      []string          `json:"disks,omitempty"`
	BMC        BMC               `json:"bmc"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Metadata is a free-form JSON object served to the machine.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Netboot  Netboot         `json:"netboot"`
	// Power is the power state last seen: "on", "off" or "unknown" ("" never asked).
	Power       string    `json:"power,omitempty"`
	PowerSeenAt time.Time `json:"power_seen_at,omitzero"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
}

// Interface is one NIC. IP is an address with prefix ("10.0.0.5/24") or empty.
type Interface struct {
	MAC         string   `json:"mac"`
	IP          string   `json:"ip,omitempty"`
	Gateway     string   `json:"gateway,omitempty"`
	NameServers []string `json:"name_servers,omitempty"`
}

// BMC says how to reach a server's baseboard management controller.
type BMC struct {
	Driver      string `json:"driver,omitempty"`
	Address     string `json:"address,omitempty"`
	Port        int    `json:"port,omitempty"`
	Username    string `json:"username,omitempty"`
	Password    string `json:"password,omitempty"`
	InsecureTLS bool   `json:"insecure_tls,omitempty"`
}

// Netboot gates network booting and workflows for one server.
type Netboot struct {
	AllowPXE      bool `json:"allow_pxe"`
	AllowWorkflow bool `json:"allow_workflow"`
}

// Template is a workflow template as the user wrote it.
type Template struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Machine is hardware with a template installed on it; its key is the
// hardware id. It owns its current workflow.
type Machine struct {
	HardwareID string            `json:"hardware_id"`
	TemplateID string            `json:"template_id"`
	Parameters map[string]string `json:"parameters,omitempty"`
	// SensitiveKeys name the Parameters that are secrets: reads of the
	// Admin API leave them out.
	SensitiveKeys []string `json:"sensitive_keys,omitempty"`
	UserData      string   `json:"user_data,omitempty"`
	// UserDataWriteOnly: the client sent UserData write-only; reads of the
	// Admin API leave it out.
	UserDataWriteOnly bool      `json:"user_data_write_only,omitempty"`
	SSHKeys           []string  `json:"ssh_keys,omitempty"`
	Wipe              string    `json:"wipe,omitempty"`
	WorkflowID        string    `json:"workflow_id,omitempty"`
	ProvisionedAt     time.Time `json:"provisioned_at,omitzero"`
	// OSReadyAt is when the installed OS of the current workflow phoned
	// home (the metadata service's POST /phone-home); zero until it did.
	// A reinstall clears it.
	OSReadyAt time.Time `json:"os_ready_at,omitzero"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// DisksUntouched: no action that writes disks (actionspec.WritesDisk)
	// has been handed to an agent since the machine was created, so its
	// disks hold nothing of it and a deprovision skips the wipe boot.
	// False, as in a machine stored before this field existed, means
	// they may hold the install.
	DisksUntouched bool `json:"disks_untouched,omitempty"`
}

// Kind is what a workflow does to its server. Its string value is what
// the store and the API carry.
type Kind string

// Workflow kinds.
const (
	KindProvision   Kind = "provision"
	KindDeprovision Kind = "deprovision"
)

// State is the state of a workflow or of one of its actions. Its string
// value is what the store and the API carry.
type State string

// Workflow and action states.
const (
	StatePending   State = "pending"
	StateBooting   State = "booting"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateTimedOut  State = "timed_out"
	StateCancelled State = "cancelled"
)

// Terminal reports whether a workflow or action in state s has ended.
func Terminal(s State) bool {
	switch s {
	case StateSucceeded, StateFailed, StateTimedOut, StateCancelled:
		return true
	}
	return false
}

// Workflow is one run of a rendered template on one server.
type Workflow struct {
	ID         string            `json:"id"`
	HardwareID string            `json:"hardware_id"`
	TemplateID string            `json:"template_id,omitempty"`
	Kind       Kind              `json:"kind"`
	State      State             `json:"state"`
	Parameters map[string]string `json:"parameters,omitempty"`
	// SensitiveKeys name the Parameters that are secrets (Machine's).
	SensitiveKeys []string `json:"sensitive_keys,omitempty"`
	Wipe          string   `json:"wipe,omitempty"`
	// GlobalTimeout bounds the whole workflow once it starts running.
	GlobalTimeout time.Duration `json:"global_timeout,omitempty"`
	// Actions are rendered when the workflow is created, so a later change
	// of the template does not touch a running workflow.
	Actions []Action `json:"actions"`
	// TokenHash is the SHA-256 of the agent token; the token itself is
	// never stored.
	TokenHash []byte `json:"token_hash,omitempty"`
	// TokenUsed says an agent has called in with the current token: from
	// then on a new token is issued only once that agent has gone silent,
	// so a second fetch of the boot script cannot take over a live agent.
	TokenUsed     bool      `json:"token_used,omitempty"`
	Error         string    `json:"error,omitempty"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// Step records how far the engine got with its own side of the
	// workflow (boot set, power cycled, ...) so a restart resumes there.
	Step string `json:"step,omitempty"`
}

// Action is one rendered action of a workflow and its state.
type Action struct {
	Task        string            `json:"task"`
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Timeout     time.Duration     `json:"timeout,omitempty"`
	Command     []string          `json:"command,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	Volumes     []string          `json:"volumes,omitempty"`
	PID         string            `json:"pid,omitempty"`
	Retries     int               `json:"retries,omitempty"`

	State      State     `json:"state"`
	Attempt    int       `json:"attempt,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Message    string    `json:"message,omitempty"`
	OutputTail string    `json:"output_tail,omitempty"`
	// LogAttempt is the attempt that LogBytes and LogDropped count: the
	// bytes of output stored in the event log and the bytes dropped past
	// the per-attempt cap.
	LogAttempt int   `json:"log_attempt,omitempty"`
	LogBytes   int64 `json:"log_bytes,omitempty"`
	LogDropped int64 `json:"log_dropped,omitempty"`
}

// Lease is an address handed out by the DHCP server.
type Lease struct {
	MAC        string    `json:"mac"`
	IP         string    `json:"ip"`
	HardwareID string    `json:"hardware_id,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	Expires    time.Time `json:"expires"`
}

// EventType says what an Event records. Its string value is what the
// store and the API carry.
type EventType string

// Event types.
const (
	// EventState: a workflow changed state (State is the new one).
	EventState EventType = "state"
	// EventAction: an action changed state (Task and Action name it).
	EventAction EventType = "action"
	// EventLog: output of an action (Message holds it).
	EventLog EventType = "log"
	// EventPower: a power or boot-device change, or why none was made.
	EventPower EventType = "power"
	// EventOperator: something an operator did or must do.
	EventOperator EventType = "operator"
	// EventOSReady: the installed OS of a provision workflow phoned home.
	EventOSReady EventType = "os_ready"
)

// Event is an entry of the append-only event log.
type Event struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	WorkflowID string    `json:"workflow_id,omitempty"`
	HardwareID string    `json:"hardware_id,omitempty"`
	Type       EventType `json:"type"`
	// State is a workflow or action State for EventState and EventAction;
	// for EventPower it may be the power action taken, so it stays a string.
	State   string `json:"state,omitempty"`
	Task    string `json:"task,omitempty"`
	Action  string `json:"action,omitempty"`
	Message string `json:"message,omitempty"`
}
