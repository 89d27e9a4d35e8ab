package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// DefaultPruneBatch is how many keys one pruning transaction deletes (or
// one read transaction looks at) when Prune is given no batch size: small
// enough that a pass never holds the write lock for long, so agents,
// DHCP and the API keep going while it runs.
const DefaultPruneBatch = 1000

// Pruned says what a Prune pass deleted.
type Pruned struct {
	Workflows int
	Events    int
}

// Prune deletes what ended before cutoff: terminal workflows (succeeded,
// failed, timed_out, cancelled) that ended before it, with their events,
// and events of no workflow (power, operator) or of a workflow that is
// gone, stamped before it. It never deletes a machine's current workflow
// (Machine.WorkflowID), however old, nor a workflow that has not ended.
//
// It works in transactions of at most batch keys (DefaultPruneBatch if
// batch <= 0), reading and deleting alternately, so it holds the write
// lock only briefly; it stops between transactions when ctx ends. A
// workflow's events go before the workflow itself, so an interrupted pass
// leaves nothing dangling that the next pass does not finish.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, batch int) (Pruned, error) {
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	var out Pruned
	ids, err := s.expiredWorkflows(ctx, cutoff, batch)
	if err != nil {
		return out, err
	}
	// Small workflows share a transaction; a big one takes several.
	for i := 0; i < len(ids); {
		var next int
		var p Pruned
		err := s.Update(ctx, func(tx *Tx) error {
			next, p = i, Pruned{}
			for budget := batch; next < len(ids) && budget > 0; {
				n, gone, done, err := tx.pruneWorkflow(ids[next], cutoff, budget)
				if err != nil {
					return fmt.Errorf("prune workflow %s: %w", ids[next], err)
				}
				budget -= n + 1
				p.Events += n
				if gone {
					p.Workflows++
				}
				if done {
					next++
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		out.Events += p.Events
		out.Workflows += p.Workflows
		i = next
	}
	n, err := s.pruneLooseEvents(ctx, cutoff, batch)
	out.Events += n
	return out, err
}

// endOf is when a workflow was last active: its end, or for one that never
// recorded an end, the latest time it has.
func endOf(w Workflow) time.Time {
	t := w.CreatedAt
	for _, u := range []time.Time{w.StartedAt, w.LastHeartbeat, w.FinishedAt} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// expired reports whether workflow w may be pruned at cutoff.
func (t *Tx) expired(w Workflow, cutoff time.Time) bool {
	if !Terminal(w.State) || !endOf(w).Before(cutoff) {
		return false
	}
	m, err := t.Machine(w.HardwareID)
	return err != nil || m.WorkflowID != w.ID
}

// expiredWorkflows lists the ids of the workflows to prune, reading batch
// records per transaction.
func (s *Store) expiredWorkflows(ctx context.Context, cutoff time.Time, batch int) ([]string, error) {
	var ids []string
	var after []byte
	for {
		var last []byte
		err := s.View(ctx, func(tx *Tx) error {
			c := tx.tx.Bucket(bWorkflows).Cursor()
			k, raw := c.First()
			if after != nil {
				k, raw = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, raw = c.Next()
				}
			}
			for n := 0; k != nil && n < batch; k, raw = c.Next() {
				n++
				last = append(last[:0], k...)
				var w Workflow
				if err := json.Unmarshal(raw, &w); err != nil {
					return fmt.Errorf("decode workflow %q: %w", k, err)
				}
				if tx.expired(w, cutoff) {
					ids = append(ids, w.ID)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list workflows to prune: %w", err)
		}
		if last == nil {
			return ids, nil
		}
		after = last
	}
}

// pruneWorkflow deletes up to batch events of workflow id and, once none
// are left, the workflow. It reports the events deleted, whether the
// workflow went, and whether this workflow is done with (gone, or no
// longer to be pruned: it is gone already or became current).
func (t *Tx) pruneWorkflow(id string, cutoff time.Time, batch int) (n int, gone, done bool, err error) {
	w, err := t.Workflow(id)
	if err != nil || !t.expired(w, cutoff) {
		return 0, false, true, nil // gone already, or no longer expired
	}
	prefix := []byte(id + "/")
	var keys [][]byte
	c := t.tx.Bucket(bEventsByWF).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < batch; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	events, index := t.tx.Bucket(bEvents), t.tx.Bucket(bEventsByWF)
	for _, k := range keys {
		if err := events.Delete(k[len(prefix):]); err != nil {
			return 0, false, false, err
		}
		if err := index.Delete(k); err != nil {
			return 0, false, false, err
		}
	}
	if len(keys) == batch {
		return len(keys), false, false, nil // more events, maybe: next transaction
	}
	if err := t.DeleteWorkflow(id); err != nil {
		return 0, false, false, err
	}
	return len(keys), true, true, nil
}

// pruneLooseEvents deletes the events stamped before cutoff that belong
// to no workflow, or to one that is gone. The log is in time order, so
// the scan ends at the first event at or after cutoff; events of kept
// workflows on the way are passed over.
func (s *Store) pruneLooseEvents(ctx context.Context, cutoff time.Time, batch int) (int, error) {
	deleted := 0
	next := uint64(1)
	for {
		var doomed []uint64
		var end bool
		err := s.View(ctx, func(tx *Tx) error {
			c := tx.tx.Bucket(bEvents).Cursor()
			n := 0
			k, raw := c.Seek(u64(next))
			for ; k != nil && n < batch; k, raw = c.Next() {
				n++
				var e struct {
					Time       time.Time `json:"time"`
					WorkflowID string    `json:"workflow_id"`
				}
				if err := json.Unmarshal(raw, &e); err != nil {
					return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
				}
				if !e.Time.Before(cutoff) {
					end = true
					return nil
				}
				seq := binary.BigEndian.Uint64(k)
				next = seq + 1
				if e.WorkflowID == "" || tx.tx.Bucket(bWorkflows).Get([]byte(e.WorkflowID)) == nil {
					doomed = append(doomed, seq)
				}
			}
			end = end || k == nil
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("list events to prune: %w", err)
		}
		if len(doomed) > 0 {
			err := s.Update(ctx, func(tx *Tx) error {
				events, index := tx.tx.Bucket(bEvents), tx.tx.Bucket(bEventsByWF)
				for _, seq := range doomed {
					raw := events.Get(u64(seq))
					if raw == nil {
						continue
					}
					var e Event
					if err := json.Unmarshal(raw, &e); err != nil {
						return fmt.Errorf("decode event %d: %w", seq, err)
					}
					if e.WorkflowID != "" {
						if err := index.Delete(append([]byte(e.WorkflowID+"/"), u64(seq)...)); err != nil {
							return err
						}
					}
					if err := events.Delete(u64(seq)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return deleted, fmt.Errorf("prune events: %w", err)
			}
			deleted += len(doomed)
		}
		if end {
			return deleted, nil
		}
	}
}
