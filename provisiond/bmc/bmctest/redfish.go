// Package bmctest holds real-protocol BMC peers for tests: a Redfish
// server speaking enough of the DMTF schema for bmclib's gofish provider,
// and a runner for OpenIPMI's ipmi_sim with a chassis_control script that
// keeps power and boot device in files.
package bmctest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Redfish is a TLS Redfish service with one ComputerSystem. It implements
// the service root, SessionService sessions (X-Auth-Token), basic auth, the
// Systems collection, ComputerSystem.Reset and PATCH of Boot with ETags.
type Redfish struct {
	srv      *httptest.Server
	user     string
	password string
	delay    atomic.Int64 // per request, nanoseconds

	// LoginAttempts counts session creations, failed or not;
	// LoginFailures those refused.
	LoginAttempts atomic.Int64
	LoginFailures atomic.Int64

	mu          sync.Mutex
	power       string // "On" or "Off"
	bootTarget  string
	bootEnabled string
	bootMode    string
	etag        int
	sessions    map[string]string // token → session id
	open        int               // sessions open now
	maxOpen     int
	resets      []string
	inflight    int
	maxInflight int
}

// NewRedfish starts a server that accepts user/password; power is off.
func NewRedfish(user, password string) *Redfish {
	r := &Redfish{
		user: user, password: password,
		power: "Off", bootTarget: "None", bootEnabled: "Disabled", bootMode: "UEFI",
		sessions: make(map[string]string),
	}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	return r
}

// Close stops the server.
func (r *Redfish) Close() { r.srv.Close() }

// Host is the server's IP address; Port its TCP port.
func (r *Redfish) Host() string {
	h, _, _ := net.SplitHostPort(r.srv.Listener.Addr().String())
	return h
}

// Port is the server's TCP port.
func (r *Redfish) Port() int {
	_, p, _ := net.SplitHostPort(r.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// CertPool trusts the server's certificate.
func (r *Redfish) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(r.srv.Certificate())
	return p
}

// SetDelay makes every request wait d before it is answered.
func (r *Redfish) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetPower sets the power state ("On" or "Off") as if by hand.
func (r *Redfish) SetPower(s string) { r.mu.Lock(); r.power = s; r.mu.Unlock() }

// State returns power ("On"/"Off"), BootSourceOverrideTarget,
// BootSourceOverrideEnabled and BootSourceOverrideMode.
func (r *Redfish) State() (power, target, enabled, mode string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.power, r.bootTarget, r.bootEnabled, r.bootMode
}

// Resets returns the ResetType of every ComputerSystem.Reset received.
func (r *Redfish) Resets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.resets...)
}

// MaxOpenSessions is the most sessions ever open at once.
func (r *Redfish) MaxOpenSessions() int { r.mu.Lock(); defer r.mu.Unlock(); return r.maxOpen }

// MaxInflight is the most requests ever in progress at once.
func (r *Redfish) MaxInflight() int { r.mu.Lock(); defer r.mu.Unlock(); return r.maxInflight }

const (
	sessionsPath = "/redfish/v1/SessionService/Sessions"
	systemPath   = "/redfish/v1/Systems/1"
	resetPath    = systemPath + "/Actions/ComputerSystem.Reset"
)

var bootTargets = []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup", "Usb", "Diags", "Utilities", "Floppy", "RemoteDrive", "SDCard", "UefiHttp"}

func (r *Redfish) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.inflight++
	r.maxInflight = max(r.maxInflight, r.inflight)
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inflight--; r.mu.Unlock() }()

	if d := time.Duration(r.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-req.Context().Done():
			return
		}
	}
	path := strings.TrimSuffix(req.URL.Path, "/")
	switch {
	case path == "/redfish/v1" && req.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
			"Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.6.0",
			"UUID":           "92384634-2938-2342-8820-489239905423",
			"Systems":        odata("/redfish/v1/Systems"),
			"SessionService": odata("/redfish/v1/SessionService"),
			"Links":          map[string]any{"Sessions": odata(sessionsPath)},
		})
		return
	case path == sessionsPath && req.Method == http.MethodPost:
		r.login(w, req)
		return
	}
	if !r.authorized(req) {
		redfishError(w, http.StatusUnauthorized, "Base.1.0.NoValidSession", "no valid session")
		return
	}
	switch {
	case strings.HasPrefix(path, sessionsPath+"/") && req.Method == http.MethodDelete:
		r.mu.Lock()
		for tok, id := range r.sessions {
			if sessionsPath+"/"+id == path {
				delete(r.sessions, tok)
				r.open--
			}
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case path == "/redfish/v1/Systems" && req.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
			"Name": "Computer System Collection", "Members@odata.count": 1,
			"Members": []any{odata(systemPath)},
		})
	case path == systemPath && req.Method == http.MethodGet:
		r.mu.Lock()
		body := map[string]any{
			"@odata.id": systemPath, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
			"Id": "1", "Name": "Test System", "SystemType": "Physical", "PowerState": r.power,
			"Boot": map[string]any{
				"BootSourceOverrideTarget":                         r.bootTarget,
				"BootSourceOverrideEnabled":                        r.bootEnabled,
				"BootSourceOverrideMode":                           r.bootMode,
				"BootSourceOverrideTarget@Redfish.AllowableValues": bootTargets,
			},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            resetPath,
				"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle", "Nmi"},
			}},
		}
		w.Header().Set("ETag", `W/"`+strconv.Itoa(r.etag)+`"`)
		r.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
	case path == systemPath && req.Method == http.MethodPatch:
		r.patchSystem(w, req)
	case path == resetPath && req.Method == http.MethodPost:
		r.reset(w, req)
	default:
		redfishError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", req.Method+" "+req.URL.Path)
	}
}

func (r *Redfish) login(w http.ResponseWriter, req *http.Request) {
	r.LoginAttempts.Add(1)
	var body struct{ UserName, Password string }
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", err.Error())
		return
	}
	if body.UserName != r.user || body.Password != r.password {
		r.LoginFailures.Add(1)
		redfishError(w, http.StatusUnauthorized, "Base.1.0.InsufficientPrivilege", "invalid username or password")
		return
	}
	tok, id := randHex(16), randHex(4)
	r.mu.Lock()
	r.sessions[tok] = id
	r.open++
	r.maxOpen = max(r.maxOpen, r.open)
	r.mu.Unlock()
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", sessionsPath+"/"+id)
	writeJSON(w, http.StatusCreated, map[string]any{"@odata.id": sessionsPath + "/" + id, "Id": id, "UserName": body.UserName})
}

func (r *Redfish) authorized(req *http.Request) bool {
	if u, p, ok := req.BasicAuth(); ok {
		return u == r.user && p == r.password
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.sessions[req.Header.Get("X-Auth-Token")]
	return ok
}

// checkETag answers 412 when If-Match names an older version.
func (r *Redfish) checkETag(w http.ResponseWriter, req *http.Request) bool {
	im := req.Header.Get("If-Match")
	if im == "" || im == "*" || im == `W/"`+strconv.Itoa(r.etag)+`"` {
		return true
	}
	redfishError(w, http.StatusPreconditionFailed, "Base.1.0.PreconditionFailed", "ETag does not match")
	return false
}

func (r *Redfish) patchSystem(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Boot *struct {
			BootSourceOverrideTarget  string
			BootSourceOverrideEnabled string
			BootSourceOverrideMode    string
		}
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Boot == nil {
		redfishError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "want a Boot object")
		return
	}
	b := body.Boot
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.checkETag(w, req) {
		return
	}
	if b.BootSourceOverrideTarget != "" && !contains(bootTargets, b.BootSourceOverrideTarget) {
		redfishError(w, http.StatusBadRequest, "Base.1.0.PropertyValueNotInList", "BootSourceOverrideTarget "+b.BootSourceOverrideTarget)
		return
	}
	if b.BootSourceOverrideEnabled != "" && !contains([]string{"Once", "Continuous", "Disabled"}, b.BootSourceOverrideEnabled) {
		redfishError(w, http.StatusBadRequest, "Base.1.0.PropertyValueNotInList", "BootSourceOverrideEnabled "+b.BootSourceOverrideEnabled)
		return
	}
	if b.BootSourceOverrideMode != "" && !contains([]string{"Legacy", "UEFI"}, b.BootSourceOverrideMode) {
		redfishError(w, http.StatusBadRequest, "Base.1.0.PropertyValueNotInList", "BootSourceOverrideMode "+b.BootSourceOverrideMode)
		return
	}
	if b.BootSourceOverrideTarget != "" {
		r.bootTarget = b.BootSourceOverrideTarget
	}
	if b.BootSourceOverrideEnabled != "" {
		r.bootEnabled = b.BootSourceOverrideEnabled
	}
	if b.BootSourceOverrideMode != "" {
		r.bootMode = b.BootSourceOverrideMode
	}
	r.etag++
	w.WriteHeader(http.StatusNoContent)
}

func (r *Redfish) reset(w http.ResponseWriter, req *http.Request) {
	var body struct{ ResetType string }
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", err.Error())
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.checkETag(w, req) {
		return
	}
	switch body.ResetType {
	case "On":
		r.power = "On"
	case "ForceOff", "GracefulShutdown":
		r.power = "Off"
	case "ForceRestart", "GracefulRestart", "PowerCycle", "Nmi":
		if r.power != "On" {
			redfishError(w, http.StatusConflict, "Base.1.0.ActionNotSupported", body.ResetType+" while powered off")
			return
		}
	default:
		redfishError(w, http.StatusBadRequest, "Base.1.0.ActionParameterNotSupported", "ResetType "+body.ResetType)
		return
	}
	r.resets = append(r.resets, body.ResetType)
	// A one-time boot override is consumed by the boot that follows.
	if body.ResetType != "ForceOff" && body.ResetType != "GracefulShutdown" && body.ResetType != "Nmi" && r.bootEnabled == "Once" {
		r.bootEnabled = "Disabled"
	}
	r.etag++
	w.WriteHeader(http.StatusNoContent)
}

func odata(id string) map[string]string { return map[string]string{"@odata.id": id} }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func redfishError(w http.ResponseWriter, code int, id, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{
		"code": id, "message": msg,
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": id, "Message": msg}},
	}})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
