package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/porttoken"
)

// Port proxy: "ANY /sandboxes/{id}/ports/{port}/{path...}" forwards to
// port inside the sandbox, at the sandbox's own private address only (the
// proxy never dials anything else, so it opens no path to the host or to
// another sandbox). HTTP/1.1, WebSocket upgrades and SSE (flushed at once)
// pass through; HTTP/2 works from the client side wherever the server
// itself serves h2.
//
// A caller authenticates with the API key (headers, as everywhere) or with
// a signed access token from POST /sandboxes/{id}/port-tokens, given as the
// query parameter PortTokenParam (the proxy then sets it as a cookie scoped
// to the port's path, so a browser's follow-up requests carry it) or that
// cookie. Neither the key, nor the token, nor its cookie reach the sandbox;
// Set-Cookie from the sandbox is dropped (the port URL shares the API's
// origin, so a sandbox must not set cookies on it).

// PortTokenParam is the query parameter (and cookie name) carrying a port
// access token.
const PortTokenParam = "declaw_port_token"

type portCtxKey struct{}

// portReq is what portProxy resolved for the reverse proxy's Rewrite.
type portReq struct {
	host, path, rawPath string
	viaKey              string // header that carried the API key ("" with a token)
	setCookie           *http.Cookie
}

func newPortProxy(s *Server) *httputil.ReverseProxy {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &httputil.ReverseProxy{
		Transport:     tr,
		FlushInterval: -1, // SSE and other streams reach the client at once
		Rewrite: func(pr *httputil.ProxyRequest) {
			p := pr.In.Context().Value(portCtxKey{}).(*portReq)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = p.host
			pr.Out.URL.Path, pr.Out.URL.RawPath = p.path, p.rawPath
			pr.Out.URL.RawQuery = stripTokenParam(pr.In.URL.Query(), pr.In.URL.RawQuery)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Prefix", portPrefix(pr.In))
			if p.viaKey != "" {
				pr.Out.Header.Del(p.viaKey)
			}
			pr.Out.Header.Del("X-API-Key")
			pr.Out.Header.Del(envdapi.AccessTokenHeader)
			dropCookie(pr.Out.Header, PortTokenParam)
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del("Set-Cookie")
			p := resp.Request.Context().Value(portCtxKey{}).(*portReq)
			if p.setCookie != nil {
				resp.Header.Add("Set-Cookie", p.setCookie.String())
				if resp.Header.Get("Referrer-Policy") == "" {
					resp.Header.Set("Referrer-Policy", "no-referrer") // keep the token out of Referer
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			if !errors.Is(err, syscall.ECONNREFUSED) { // nothing listening yet is the app's business
				s.logf("api: port proxy %s %s: %v", r.Method, r.URL.Path, err)
			}
			writeJSON(w, http.StatusBadGateway, map[string]string{
				"message": "nothing answered on port " + r.PathValue("port") + " in the sandbox",
				"code":    "port_unreachable"})
		},
	}
}

// portPrefix is "/sandboxes/{id}/ports/{port}" of r.
func portPrefix(r *http.Request) string {
	return "/sandboxes/" + r.PathValue("id") + "/ports/" + r.PathValue("port")
}

// parsePort validates the {port} path value.
func parsePort(r *http.Request) (int, error) {
	p, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != r.PathValue("port") {
		return 0, badRequest("invalid_port", "port must be a number from 1 to 65535")
	}
	if p == envdapi.Port {
		return 0, &Error{Status: http.StatusForbidden, Code: "port_forbidden",
			Message: "port " + strconv.Itoa(p) + " is the sandbox agent's own port and is not proxied"}
	}
	return p, nil
}

// portAuth admits a request carrying a valid port access token (query or
// cookie) for this sandbox and port, else falls back to API key auth.
func (s *Server) portAuth(next http.HandlerFunc) http.HandlerFunc {
	keyed := s.auth(func(w http.ResponseWriter, r *http.Request) {
		via := "X-API-Key"
		if r.Header.Get("X-API-Key") == "" {
			via = "Authorization"
		}
		next(w, r.WithContext(contextWithPort(r, &portReq{viaKey: via})))
	})
	return func(w http.ResponseWriter, r *http.Request) {
		port, err := parsePort(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		tok, fromQuery := r.URL.Query().Get(PortTokenParam), true
		if tok == "" {
			fromQuery = false
			if c, err := r.Cookie(PortTokenParam); err == nil {
				tok = c.Value
			}
		}
		if tok == "" {
			keyed(w, r)
			return
		}
		id := r.PathValue("id")
		t, err := s.cfg.Sandboxes.Envd(r.Context(), id)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		exp, err := s.portTokens.Verify(tok, id, port, t.Token, time.Now())
		if err != nil {
			if r.Header.Get("X-API-Key") != "" {
				keyed(w, r) // a stale cookie does not shadow a valid key
				return
			}
			msg := "invalid port access token"
			if errors.Is(err, porttoken.ErrExpired) {
				msg = "port access token expired; ask for a new one"
			}
			s.writeError(w, r, &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: msg})
			return
		}
		p := &portReq{}
		if fromQuery {
			p.setCookie = &http.Cookie{
				Name: PortTokenParam, Value: tok, Path: portPrefix(r) + "/",
				Expires: exp, MaxAge: int(time.Until(exp).Seconds()) + 1,
				HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
			}
		}
		next(w, r.WithContext(contextWithPort(r, p)))
	}
}

func contextWithPort(r *http.Request, p *portReq) context.Context {
	return context.WithValue(r.Context(), portCtxKey{}, p)
}

func (s *Server) portProxy(w http.ResponseWriter, r *http.Request) {
	port, err := parsePort(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.cfg.Sandboxes.Envd(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Only the addressed sandbox's own private address is ever dialled.
	host, _, err := net.SplitHostPort(t.BaseURL.Host)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p := r.Context().Value(portCtxKey{}).(*portReq)
	p.host = net.JoinHostPort(host, strconv.Itoa(port))
	rawRest := strings.TrimPrefix(r.URL.EscapedPath(), portPrefix(r))
	if rawRest == "" {
		rawRest = "/"
	}
	if p.path, err = url.PathUnescape(rawRest); err != nil {
		s.writeError(w, r, badRequest("invalid_path", "malformed path escape"))
		return
	}
	if p.path != rawRest {
		p.rawPath = rawRest
	}
	s.ports.ServeHTTP(w, r)
}

// createPortToken answers POST /sandboxes/{id}/port-tokens
// {"port": N, "ttl_seconds": T} with a signed token for that port.
func (s *Server) createPortToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Port       int `json:"port"`
		TTLSeconds int `json:"ttl_seconds"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	probe := r.Clone(r.Context())
	probe.SetPathValue("port", strconv.Itoa(in.Port))
	port, err := parsePort(probe)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl := porttoken.DefaultTTL
	if in.TTLSeconds < 0 || time.Duration(in.TTLSeconds)*time.Second > porttoken.MaxTTL {
		s.writeError(w, r, badRequest("invalid_argument", "ttl_seconds must be from 1 to "+strconv.Itoa(int(porttoken.MaxTTL.Seconds()))))
		return
	} else if in.TTLSeconds > 0 {
		ttl = time.Duration(in.TTLSeconds) * time.Second
	}
	id := r.PathValue("id")
	t, err := s.cfg.Sandboxes.Envd(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	tok := s.portTokens.Sign(id, port, t.Token, exp)
	s.cfg.Sandboxes.Audit(r.Context(), id, "port.token", map[string]any{"port": port, "expires_at": exp.UTC()})
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":      tok,
		"port":       port,
		"expires_at": exp.UTC(),
		"path":       "/sandboxes/" + id + "/ports/" + strconv.Itoa(port) + "/?" + PortTokenParam + "=" + url.QueryEscape(tok),
	})
}

// stripTokenParam returns raw without PortTokenParam (raw unchanged when it
// has none, so the sandbox sees the query exactly as sent).
func stripTokenParam(q url.Values, raw string) string {
	if !q.Has(PortTokenParam) {
		return raw
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == PortTokenParam {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "&")
}

// dropCookie removes cookie name from h's Cookie headers, keeping the rest.
func dropCookie(h http.Header, name string) {
	vals := h.Values("Cookie")
	if len(vals) == 0 {
		return
	}
	h.Del("Cookie")
	for _, v := range vals {
		var kept []string
		for _, c := range strings.Split(v, ";") {
			k, _, _ := strings.Cut(strings.TrimSpace(c), "=")
			if k == name {
				continue
			}
			if c = strings.TrimSpace(c); c != "" {
				kept = append(kept, c)
			}
		}
		if len(kept) > 0 {
			h.Add("Cookie", strings.Join(kept, "; "))
		}
	}
}
