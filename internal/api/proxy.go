package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/declaw/declaw/internal/envdapi"
)

// envdProxy forwards "/sandboxes/{id}/REST" to the sandbox's envd "/REST",
// streaming both ways (large uploads and SSE are never buffered whole).
type envdProxy struct {
	s  *Server
	rp *httputil.ReverseProxy
}

type targetKey struct{}

func newEnvdProxy(s *Server) *envdProxy {
	p := &envdProxy{s: s}
	p.rp = &httputil.ReverseProxy{
		Transport:     s.cfg.Sandboxes.Transport(),
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Target was resolved in ServeHTTP and stored on the request.
			t := pr.In.Context().Value(targetKey{}).(proxyTarget)
			pr.Out.URL.Scheme = t.scheme
			pr.Out.URL.Host = t.host
			pr.Out.URL.Path = t.path
			pr.Out.URL.RawPath = ""
			pr.Out.Host = t.host
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("X-API-Key")
			pr.Out.Header.Del("Cookie")
			pr.Out.Header.Set(envdapi.AccessTokenHeader, t.token)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.writeError(w, r, err)
				return
			}
			s.logf("api: forward %s %s to envd: %v", r.Method, r.URL.Path, err)
			if r.Context().Err() != nil {
				return // the client went away
			}
			writeJSON(w, http.StatusBadGateway, map[string]string{"message": "sandbox agent (envd) is unreachable", "code": "envd_unreachable"})
		},
	}
	return p
}

type proxyTarget struct {
	scheme, host, path, token string
}

func (p *envdProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, err := p.s.cfg.Sandboxes.Envd(r.Context(), id)
	if err != nil {
		p.s.writeError(w, r, err)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/sandboxes/"+id)
	if !strings.HasPrefix(rest, "/") {
		p.s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint"})
		return
	}
	if !isRawUpload(r) {
		if r.ContentLength > MaxJSONBody {
			p.s.writeError(w, r, &http.MaxBytesError{Limit: MaxJSONBody})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxJSONBody)
	}
	var act activity
	act.teeBody(r)
	sw := &statusWriter{ResponseWriter: w}
	ctx := contextWith(r, proxyTarget{scheme: t.BaseURL.Scheme, host: t.BaseURL.Host, path: rest, token: t.Token})
	p.rp.ServeHTTP(sw, r.WithContext(ctx))
	if typ, data := describe(r.Method, rest, r.URL.Query(), act.body.Bytes(), sw.status); typ != "" {
		// Values of the sandbox's masked env vars never reach the store.
		if cmd, ok := data["cmd"].(string); ok {
			data["cmd"] = string(p.s.cfg.Sandboxes.MaskSecrets(id, []byte(cmd)))
		}
		p.s.cfg.Sandboxes.Audit(context.WithoutCancel(r.Context()), id, typ, data)
	}
}

// isRawUpload reports whether r streams file bytes (no JSON size cap).
func isRawUpload(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/files/raw")
}
