package ipxe

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// files serves regular files under the directory dir() returns, with
// Range, ETag, Last-Modified and Content-Length (http.ServeContent). There
// is no directory listing, and os.Root refuses "..", absolute paths and
// symlinks that lead out of the directory. extra maps names to files
// outside it, served first.
func (h *Handler) files(kind string, dir func() string, extra map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("path")
		log := h.log.With("path", r.URL.Path, "remote", r.RemoteAddr)
		if p, ok := extra[name]; ok {
			f, err := os.Open(p)
			if err != nil {
				log.Error("open file", "kind", kind, "file", p, "err", err)
				http.NotFound(w, r)
				return
			}
			defer func() { _ = f.Close() }() // read-only
			serveFile(w, r, name, f)
			return
		}
		if dir() == "" {
			http.Error(w, kind+" directory is not configured", http.StatusNotFound)
			return
		}
		if name == "" {
			http.NotFound(w, r) // no directory listing
			return
		}
		if !fs.ValidPath(name) || strings.Contains(name, "\\") {
			log.Warn("refused file path", "kind", kind)
			http.Error(w, "invalid path", http.StatusBadRequest)
			return
		}
		root, err := os.OpenRoot(dir())
		if err != nil {
			log.Error("open directory", "kind", kind, "dir", dir(), "err", err)
			http.Error(w, "directory unavailable", http.StatusInternalServerError)
			return
		}
		defer func() { _ = root.Close() }() // read-only, like f
		f, err := root.Open(name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				log.Warn("refused file", "kind", kind, "err", err)
			}
			http.NotFound(w, r)
			return
		}
		defer func() { _ = f.Close() }() // read-only: nothing to lose on close
		serveFile(w, r, name, f)
	})
}

// serveFile sends the regular file f, named name, with a validator.
func serveFile(w http.ResponseWriter, r *http.Request, name string, f *os.File) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	// A strong validator from size and modification time (as nginx
	// does): hashing multi-GB images per request is not affordable.
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, st.ModTime().UnixNano(), st.Size()))
	switch path.Ext(name) {
	case ".efi":
		w.Header().Set("Content-Type", "application/efi") // UEFI HTTP boot wants it
	case ".ipxe":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, name, st.ModTime(), f)
}
