package metadata

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// MaxPhoneHomeBody bounds the body of a phone-home POST. cloud-init's
// phone_home posts an instance id, two host names and up to four SSH host
// public keys (an RSA-4096 key is about 750 bytes), well under this.
const MaxPhoneHomeBody = 64 << 10

// Results of a phone-home request, the label of
// provisiond_metadata_phone_home_total.
const (
	phoneReady    = "ready"    // recorded: the machine's OS is up
	phoneRepeat   = "repeat"   // already recorded for this install
	phoneRefused  = "refused"  // no install to confirm, or another instance id
	phoneNotReady = "not_yet"  // the install has not finished its actions yet
	phoneBad      = "bad_body" // unreadable or oversized body
)

// phoneHomeKeys are the SSH host key fields cloud-init's phone_home module posts
// (cc_phone_home.POST_LIST_ALL); others are ignored.
var phoneHomeKeys = []string{"pub_key_dsa", "pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519"}

// servePhoneHome records that the installed OS of the caller's machine is
// up: POST /phone-home (and /phone-home/{instance_id}, for a URL written
// with cloud-init's $INSTANCE_ID). The caller was identified by wrap, by
// its source address, like every metadata request. The install it
// confirms is the machine's current workflow, which must be a provision
// that succeeded or has run all its actions (the engine may still be
// switching the server to its disk when a kexec'd OS comes up). Only the
// first phone-home of an install is recorded, as Machine.OSReadyAt and an
// "os_ready" event on the workflow; repeats answer 200 and change nothing.
func (s *Server) servePhoneHome(w http.ResponseWriter, r *http.Request, req *request) {
	hw := req.rec.hw
	r.Body = http.MaxBytesReader(w, r.Body, MaxPhoneHomeBody)
	if err := r.ParseForm(); err != nil {
		s.phone.WithLabelValues(phoneBad).Inc()
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("phone-home body over %d bytes", MaxPhoneHomeBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "unreadable phone-home form: "+err.Error(), http.StatusBadRequest)
		return
	}
	form := r.PostForm
	id := r.PathValue("instance_id")
	if id == "" {
		id = form.Get("instance_id")
	}
	if id != "" && id != "N/A" && id != hw.ID {
		// cloud-init posts the id of the datasource it booted from: a
		// stale one is an image that did not pick up provisiond's metadata.
		s.phone.WithLabelValues(phoneRefused).Inc()
		s.log.Info("phone-home refused: another instance id", "ip", req.rec.ip, "hardware", hw.ID, "instance_id", clean(id, 80))
		http.Error(w, "instance_id is not this machine's", http.StatusForbidden)
		return
	}

	var result, wfID, why string
	now := s.now().UTC()
	err := s.st.Update(r.Context(), func(tx *store.Tx) error {
		result, wfID, why = "", "", ""
		m, err := tx.Machine(hw.ID)
		if errors.Is(err, store.ErrNotFound) {
			result, why = phoneRefused, "no machine is installed on this hardware"
			return nil
		}
		if err != nil {
			return err
		}
		wfID = m.WorkflowID
		wf, err := tx.Workflow(m.WorkflowID)
		if err != nil {
			return err
		}
		switch {
		case wf.Kind != store.KindProvision:
			result, why = phoneRefused, "the machine is being deprovisioned"
			return nil
		case wf.State == store.StateSucceeded, wf.State == store.StateRunning && actionsDone(wf):
		case store.Terminal(wf.State):
			result, why = phoneRefused, "the install ended "+string(wf.State)
			return nil
		default:
			result, why = phoneNotReady, "the install is still "+string(wf.State)
			return nil
		}
		if !m.OSReadyAt.IsZero() {
			result = phoneRepeat
			return nil
		}
		m.OSReadyAt = now
		if err := tx.PutMachine(m); err != nil {
			return err
		}
		_, err = tx.AppendEvent(store.Event{
			Time: now, WorkflowID: wf.ID, HardwareID: hw.ID, Type: store.EventOSReady,
			Message: phoneHomeMessage(req, form),
		})
		result = phoneReady
		return err
	})
	if err != nil {
		s.log.Error("record phone-home", "ip", req.rec.ip, "hardware", hw.ID, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.phone.WithLabelValues(result).Inc()
	switch result {
	case phoneReady:
		s.log.Info("installed OS phoned home", "ip", req.rec.ip, "hardware", hw.ID, "workflow", wfID, "hostname", clean(form.Get("hostname"), 80))
	case phoneRepeat:
		s.log.Debug("installed OS phoned home again", "ip", req.rec.ip, "hardware", hw.ID, "workflow", wfID)
	default:
		// 409: cloud-init retries (tries, 3 s apart), so an OS that
		// phones home while the engine is finishing gets through.
		s.log.Info("phone-home refused", "ip", req.rec.ip, "hardware", hw.ID, "workflow", wfID, "reason", why)
		http.Error(w, "phone-home not accepted: "+why, http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

// actionsDone reports whether every action of w succeeded: the agent is
// done and the engine is finishing (netboot off, boot device, reset).
func actionsDone(w store.Workflow) bool {
	for _, a := range w.Actions {
		if a.State != store.StateSucceeded {
			return false
		}
	}
	return true
}

// phoneHomeMessage is the event's message: where the call came from and
// what the OS says it is. SSH host keys appear as fingerprints, never in
// full; other posted values are cut short and stripped of control
// characters.
func phoneHomeMessage(req *request, form url.Values) string {
	var b strings.Builder
	fmt.Fprintf(&b, "installed OS is up: phoned home from %s", req.rec.ip)
	for _, k := range []string{"hostname", "fqdn"} {
		if v := clean(form.Get(k), 255); v != "" && v != "N/A" {
			fmt.Fprintf(&b, ", %s %s", k, v)
		}
	}
	var keys []string
	for _, k := range phoneHomeKeys {
		if fp := fingerprint(form.Get(k)); fp != "" {
			keys = append(keys, strings.TrimPrefix(k, "pub_key_")+" "+fp)
		}
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		fmt.Fprintf(&b, ", SSH host keys %s", strings.Join(keys, ", "))
	}
	return b.String()
}

// fingerprint returns the OpenSSH SHA256 fingerprint of an authorized_keys
// line ("ssh-ed25519 AAAA... comment"), or "" when it is not one.
func fingerprint(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(raw) == 0 {
		return ""
	}
	sum := sha256.Sum256(raw)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// clean makes a posted value safe for a log line: printable characters
// only, at most n runes.
func clean(v string, n int) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(v) {
		if n == 0 {
			break
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			n--
		}
	}
	return b.String()
}
