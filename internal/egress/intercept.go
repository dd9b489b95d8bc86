package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/declaw/declaw/internal/egress/stage"
)

// intercepted is one sandbox connection whose content the proxy inspects:
// TLS terminated with a leaf from the sandbox's CA (or plain HTTP), each
// request re-decided on the sandbox's current policy, run through the
// pipeline and forwarded with an http.Transport of its own that dials only
// through the proxy's checked dialers.
type intercepted struct {
	p        *Proxy
	s        *session
	cs       *contentState // at admission (the CA); requests use the current one
	id       string
	proto    string
	src, dst netip.AddrPort
	host     string // SNI (TLS) or first Host (HTTP); may be empty for TLS
	client   *prefixConn

	isTLS      bool
	serverName string // upstream TLS name: SNI, or the original address

	up *upstreamPool // the sandbox's pool for this connection's upstream
	tr *http.Transport
}

type endReason struct {
	block bool // reset the client (no successful handshake)
	text  string
}

func (ic *intercepted) serve(ctx context.Context) endReason {
	if ic.proto == ProtoTLS {
		return ic.serveTLS(ctx)
	}
	ic.up = ic.p.pool(poolKey{guest: ic.src.Addr().Unmap(), dst: ic.dst})
	ic.tr = ic.up.tr
	return ic.serveHTTP1(ctx, ic.client)
}

// serveTLS makes sure the upstream's certificate verifies (connecting
// first, unless a connection of the pool verified within verifiedFor), so
// that a bad upstream certificate fails the sandbox's handshake, then
// terminates the sandbox's TLS with a leaf for the same name.
func (ic *intercepted) serveTLS(ctx context.Context) endReason {
	ic.isTLS = true
	ic.serverName = ic.host
	if ic.serverName == "" {
		ic.serverName = ic.dst.Addr().String()
	}
	ic.up = ic.p.pool(poolKey{guest: ic.src.Addr().Unmap(), tls: true, name: ic.serverName, dst: ic.dst})
	ic.tr = ic.up.tr
	if !ic.up.recentlyVerified() {
		dctx, cancel := context.WithTimeout(ctx, ic.p.cfg.DialTimeout)
		raw, err := ic.up.dial(dctx, ic.serverName)
		cancel()
		if err != nil {
			return endReason{true, "upstream unreachable: " + userSafe(err)}
		}
		up, err := ic.up.handshake(ctx, raw)
		if err != nil {
			ev := ic.newEvent(time.Now())
			ev.Decision, ev.Stage = DecisionBlock, "upstream_tls"
			ev.Reason = err.Error()
			ic.p.emitHTTP(ev)
			return endReason{true, err.Error()}
		}
		ic.up.putSpare(up)
	}
	leaf, err := ic.cs.content.CA.Leaf(ic.serverName)
	if err != nil {
		return endReason{true, "no certificate: " + err.Error()}
	}
	srv := tls.Server(ic.client, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	hctx, cancel := context.WithTimeout(ctx, ic.p.cfg.PeekTimeout)
	err = srv.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return endReason{true, "sandbox TLS handshake failed: " + userSafe(err)}
	}
	if srv.ConnectionState().NegotiatedProtocol == "h2" {
		// net/http serves HTTP/2 only on connections it accepts and
		// handshakes itself; this one was accepted, peeked and handshaken
		// by the proxy, with its sandbox and destination in ctx, and
		// x/net/http2's ServeConn is still the one API that serves such a
		// connection.
		//lint:ignore SA1019 no net/http equivalent serves an already-handshaken conn with a per-conn context
		h2 := &http2.Server{IdleTimeout: ic.p.cfg.IdleTimeout, MaxReadFrameSize: 1 << 20}
		//lint:ignore SA1019 see above
		h2.ServeConn(srv, &http2.ServeConnOpts{
			Context:    ctx,
			Handler:    http.HandlerFunc(ic.serveH2),
			BaseConfig: &http.Server{MaxHeaderBytes: ic.p.cfg.MaxHeaderBytes},
		})
		return endReason{}
	}
	return ic.serveHTTP1(ctx, srv)
}

// upstreamTLSError words a failed upstream handshake for the audit.
func upstreamTLSError(name string, err error) error {
	var ve *tls.CertificateVerificationError
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	if errors.As(err, &ve) || errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ie) {
		return fmt.Errorf("upstream certificate verification failed for %s: %v", name, err)
	}
	return fmt.Errorf("upstream TLS handshake with %s failed: %v", name, err)
}

// verifyChain verifies a peer chain for name against any of the pools.
func verifyChain(pools []*x509.CertPool, chain []*x509.Certificate, name string) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	var first error
	for _, roots := range pools {
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: first}
}

// ---- HTTP/1.x from the sandbox ----

// serveHTTP1 reads requests one after the other (keep-alive, pipelining),
// answering each before reading the next.
func (ic *intercepted) serveHTTP1(ctx context.Context, conn net.Conn) endReason {
	lr := &io.LimitedReader{R: conn, N: int64(ic.p.cfg.MaxHeaderBytes)}
	br := bufio.NewReaderSize(lr, 16<<10)
	bw := bufio.NewWriterSize(conn, 16<<10)
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return endReason{}
		}
		lr.N = int64(ic.p.cfg.MaxHeaderBytes)
		conn.SetReadDeadline(time.Now().Add(ic.p.cfg.IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			return endReason{} // closed (or idle) between requests
		}
		start := time.Now()
		conn.SetReadDeadline(start.Add(ic.p.cfg.PeekTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			status, what := http.StatusBadRequest, "malformed request"
			if lr.N <= 0 {
				status, what = http.StatusRequestHeaderFieldsTooLarge, "request header too large"
			}
			ev := ic.newEvent(start)
			ev.Decision, ev.Stage, ev.Status, ev.Direction = DecisionBlock, "malformed", status, "outbound"
			ev.Reason = what + ": " + clipErr(err)
			writeError(bw, status, what)
			bw.Flush()
			ic.p.emitHTTP(ev)
			lingerClose(conn)
			return endReason{text: what}
		}
		conn.SetReadDeadline(time.Time{})
		lr.N = math.MaxInt64
		if req.Header.Get("Upgrade") != "" {
			req.Body.Close()
			ev := ic.newEvent(start)
			ic.fillRequest(&ev, req)
			ev.Decision, ev.Stage, ev.Status, ev.Direction = DecisionBlock, "malformed", http.StatusNotImplemented, "outbound"
			ev.Reason = "protocol upgrade is not supported on intercepted connections"
			writeError(bw, ev.Status, ev.Reason)
			bw.Flush()
			ic.p.emitHTTP(ev)
			return endReason{text: "upgrade refused"}
		}
		if len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked" {
			// A chunked body starts with a hex chunk size: anything else
			// (a body sent unframed under "Transfer-Encoding: chunked")
			// would leave the chunk reader waiting for a line end forever.
			conn.SetReadDeadline(time.Now().Add(ic.p.cfg.BodyIdleTimeout))
			b, err := br.Peek(1)
			conn.SetReadDeadline(time.Time{})
			if err != nil || !isHex(b[0]) {
				// No req.Body.Close: it would drain the unframed body.
				ev := ic.newEvent(start)
				ic.fillRequest(&ev, req)
				status, what := http.StatusBadRequest, "malformed chunked request body"
				if err != nil && isTimeout(err) {
					status, what = http.StatusRequestTimeout, "request body stalled"
				}
				ev.Decision, ev.Stage, ev.Status, ev.Direction = DecisionBlock, "malformed", status, "outbound"
				ev.Reason = what
				writeError(bw, status, what)
				bw.Flush()
				ic.p.emitHTTP(ev)
				lingerClose(conn)
				return endReason{text: what}
			}
		}
		cb := newClientBody(req.Body, ic.p.cfg.BodyIdleTimeout, conn.SetReadDeadline)
		req.Body = cb
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			req.Header.Del("Expect")
			if req.ContentLength != 0 {
				bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				bw.Flush()
			}
		}
		req = req.WithContext(ctx)
		resp := ic.roundTrip(req, start)
		closeAfter := req.Close || resp.Close || ctx.Err() != nil
		resp.Close = closeAfter
		resp.Request = req
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
		if req.ProtoMinor == 0 && req.ProtoMajor == 1 {
			resp.Proto, resp.ProtoMinor = "HTTP/1.0", 0
		}
		if resp.ContentLength < 0 && resp.ProtoMinor == 1 {
			resp.TransferEncoding = []string{"chunked"}
		} else {
			resp.TransferEncoding = nil
			if resp.ContentLength < 0 {
				closeAfter = true // HTTP/1.0: the body ends with the connection
				resp.Close = true
			}
		}
		body := resp.Body
		resp.Body = &flushReader{r: body, w: bw}
		// The struct hides bufio.Writer.ReadFrom, which would read the body
		// into the buffer flushReader flushes.
		werr := resp.Write(struct{ io.Writer }{bw})
		if werr == nil {
			werr = bw.Flush()
		}
		body.Close()
		// What the exchange left of the request body is drained (a
		// little, to keep the connection) or the connection is closed.
		if !cb.done() {
			io.CopyN(io.Discard, cb, 256<<10)
			if !cb.done() {
				closeAfter = true
			}
		}
		if werr != nil || closeAfter {
			return endReason{}
		}
	}
}

// flushReader flushes w before every read of r, so each chunk of a
// streamed body reaches the sandbox as soon as it is produced.
type flushReader struct {
	r io.Reader
	w *bufio.Writer
}

func (f *flushReader) Read(p []byte) (int, error) {
	if err := f.w.Flush(); err != nil {
		return 0, err
	}
	return f.r.Read(p)
}

func (f *flushReader) Close() error { return nil }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func writeError(w io.Writer, status int, msg string) {
	body := errorJSON(msg)
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

func errorJSON(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return append(b, '\n')
}

// lingerClose half-closes c and drains what the client still sends for a
// moment, so that closing does not reset the connection (and discard the
// error response) while unread request bytes are pending.
func lingerClose(c net.Conn) {
	closeWrite(c)
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c, 1<<20)
}

// ---- HTTP/2 from the sandbox ----

func (ic *intercepted) serveH2(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = newClientBody(r.Body, ic.p.cfg.BodyIdleTimeout, nil)
	}
	resp := ic.roundTrip(r, time.Now())
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	removeHopByHop(h)
	h.Del("Content-Length")
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// ---- one exchange ----

func (ic *intercepted) newEvent(start time.Time) HTTPEvent {
	return HTTPEvent{Time: start, SandboxID: ic.id, Src: ic.src, Dst: ic.dst, TLS: ic.isTLS, Host: ic.host}
}

func (ic *intercepted) fillRequest(ev *HTTPEvent, req *http.Request) {
	scheme := "http"
	if ic.isTLS {
		scheme = "https"
	}
	ev.Proto, ev.Method = req.Proto, req.Method
	ev.Host = requestHost(req, ic.host)
	ev.URL = scheme + "://" + req.Host + req.URL.RequestURI()
}

// requestHost is the request's host name, lower-cased, without port.
func requestHost(req *http.Request, fallback string) string {
	h := req.Host
	if h == "" {
		return fallback
	}
	if name, ok := hostFromAuthority(h); ok {
		return name
	}
	return strings.ToLower(h)
}

// roundTrip is the adapter around the pipeline for one request: it always
// returns a response for the sandbox (the upstream's, processed, or an
// error/block response) and emits the HTTPEvent when its body is done.
func (ic *intercepted) roundTrip(req *http.Request, start time.Time) *http.Response {
	ev := ic.newEvent(start)
	ic.fillRequest(&ev, req)
	host := ev.Host
	reply := func(status int, stg, reason string, body []byte, dir string) *http.Response {
		if req.Body != nil {
			req.Body.Close()
		}
		ev.Status, ev.Stage, ev.Reason, ev.Direction = status, stg, reason, dir
		if ev.Decision == "" {
			ev.Decision = DecisionBlock
		}
		ev.ResponseBytes = int64(len(body))
		ic.p.emitHTTP(ev)
		return jsonResponse(status, stg, body)
	}

	_, pol, cs, ok := ic.p.reg.current(ic.src.Addr().Unmap())
	if !ok {
		return reply(http.StatusForbidden, "policy", "sandbox unregistered", errorJSON("blocked by declaw: sandbox not registered"), "outbound")
	}
	if ic.isTLS && host != ic.serverName && !(ic.host == "" && host != "") {
		return reply(http.StatusMisdirectedRequest, "policy", fmt.Sprintf("Host %q differs from the TLS server name %q", host, ic.serverName),
			errorJSON("declaw: request host does not match the TLS server name"), "outbound")
	}
	if v := DecideConn(pol, ic.dst.Addr(), host); !v.Allow {
		return reply(http.StatusForbidden, "policy", v.Reason, errorJSON("blocked by declaw: "+v.Reason), "outbound")
	}
	pl := &stage.Pipeline{}
	if cs != nil && cs.pipeline != nil {
		pl = cs.pipeline
	}
	ex := stage.NewExchange()
	defer func() { fillReport(&ev, ex) }()

	// The upstream request.
	out := req.Clone(req.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	urlHost := host
	if ic.isTLS {
		out.URL.Scheme = "https"
		urlHost = ic.serverName
	}
	out.URL.Host = net.JoinHostPort(urlHost, strconv.Itoa(int(ic.dst.Port())))
	out.Header = req.Header.Clone()
	removeHopByHop(out.Header)
	out.Close = false // the sandbox's "Connection: close" is hop-by-hop: the upstream connection is pooled
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	if ae := out.Header.Get("Accept-Encoding"); ae != "" {
		if f := filterAcceptEncoding(ae); f != "" {
			out.Header.Set("Accept-Encoding", f)
		} else {
			out.Header.Del("Accept-Encoding")
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	if !hasBody {
		out.Body, out.ContentLength = nil, 0
	}
	out.Trailer = nil // request trailers are not forwarded (nor scanned)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // send none, as the sandbox did
	}
	ev.RequestBytes = max(req.ContentLength, 0)

	var streamDone chan error // set when the body is streamed through the stages
	if stages := pl.Stages(stage.Outbound, host); len(stages) > 0 {
		o := outbound{ic: ic, pl: pl, stages: stages, ex: ex, host: host, req: req, out: out, ev: &ev}
		if resp := o.run(hasBody, reply); resp != nil {
			return resp
		}
		streamDone = o.streamDone
		ev.URL = ic.scheme() + "://" + req.Host + out.URL.RequestURI()
	}
	if out.ContentLength > 0 {
		ev.RequestBytes = out.ContentLength
	}

	out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
		GotConn: func(gi httptrace.GotConnInfo) {
			if ta, ok := gi.Conn.RemoteAddr().(*net.TCPAddr); ok {
				ic.s.noteUpstream(unmap(ta.AddrPort()))
			}
		},
	}))
	resp, err := ic.tr.RoundTrip(out)
	if streamDone != nil {
		// The transport closes the body (ending the stream) at the latest
		// when the exchange ends; the response stages need the stream's
		// redactions.
		if serr := <-streamDone; serr != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return streamFailed(serr, ex, &ev, reply)
		}
	}
	if err != nil {
		if errors.Is(err, errBodyStalled) || isTimeout(err) && hasBody {
			return reply(http.StatusRequestTimeout, "malformed", "request body stalled: "+clipErr(err),
				errorJSON("declaw: request body stalled"), "outbound")
		}
		ev.Decision = DecisionError
		return reply(http.StatusBadGateway, "upstream", "upstream request failed: "+clipErr(err),
			errorJSON("declaw: upstream request failed"), "outbound")
	}
	removeHopByHop(resp.Header)
	ev.Status = resp.StatusCode

	noBody := req.Method == http.MethodHead || resp.StatusCode < 200 || resp.StatusCode == 204 || resp.StatusCode == 304
	stages := pl.Stages(stage.Inbound, host)
	if ex.Redactor.Len() == 0 {
		stages = dropRehydrate(stages)
	} else if len(stages) != len(dropRehydrate(stages)) {
		ex.Report.Rehydrated += stage.RehydrateHeader(resp.Header, ex.Redactor.Map())
	}
	switch {
	case noBody || len(stages) == 0:
	case isBinaryMedia(resp.Header):
		ev.Notes = append(ev.Notes, "binary response ("+resp.Header.Get("Content-Type")+"), not scanned")
	case isSSE(resp.Header):
		r := io.Reader(resp.Body)
		if ce := resp.Header.Get("Content-Encoding"); ce != "" {
			d, err := stage.Decoder(resp.Body, ce)
			if err != nil {
				if pl.BlockUnscannableResponse {
					resp.Body.Close()
					return ic.unscannable(&ev, pl, resp, reply)
				}
				ev.Notes = append(ev.Notes, "response stream encoding not decodable, not scanned")
				break
			}
			r = d
		}
		m := &stage.Message{Direction: stage.Inbound, Host: host, Header: resp.Header}
		resp.Body = &sseBody{r: r, c: resp.Body, sse: stage.NewSSE(pl, ex, host, m)}
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	default:
		dec, consumed, err := stage.ReadBody(resp.Body, resp.Header.Get("Content-Encoding"), ic.p.cfg.MaxScanBody)
		switch {
		case errors.Is(err, stage.ErrTooLarge), errors.Is(err, stage.ErrUnsupported), errors.Is(err, stage.ErrDecode):
			if pl.BlockUnscannableResponse {
				resp.Body.Close()
				return ic.unscannable(&ev, pl, resp, reply)
			}
			ev.Notes = append(ev.Notes, "response body too large or not decodable, not scanned")
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(consumed), resp.Body), resp.Body}
		case err != nil:
			resp.Body.Close()
			ev.Decision = DecisionError
			return reply(http.StatusBadGateway, "upstream", "response body: "+clipErr(err), errorJSON("declaw: unreadable upstream response"), "inbound")
		default:
			resp.Body.Close()
			m := &stage.Message{Direction: stage.Inbound, Host: host, Header: resp.Header, Body: dec}
			if v := stage.Run(stages, ex, m); v.Action == stage.Block {
				fillReport(&ev, ex)
				return reply(ex.Block.Status, ex.Block.Stage, v.Reason, ex.Block.Body, "inbound")
			}
			resp.Header.Del("Content-Encoding")
			resp.Header.Set("Content-Length", strconv.Itoa(len(m.Body)))
			resp.ContentLength = int64(len(m.Body))
			resp.Body = io.NopCloser(bytes.NewReader(m.Body))
		}
	}
	ev.Decision, ev.Direction = DecisionAllow, "both"
	eb := &eventBody{rc: resp.Body}
	eb.done = func(n int64, blocked *stage.Verdict) {
		fillReport(&ev, ex)
		ev.ResponseBytes = n
		ev.Duration = time.Since(ev.Time)
		if blocked != nil {
			ev.Decision, ev.Stage, ev.Reason, ev.Direction = DecisionBlock, "injection", blocked.Reason+" (stream cut)", "inbound"
		}
		ic.p.emitHTTP(ev)
	}
	resp.Body = eb
	return resp
}

func (ic *intercepted) unscannable(ev *HTTPEvent, pl *stage.Pipeline, resp *http.Response,
	reply func(int, string, string, []byte, string) *http.Response) *http.Response {
	what := "response body too large to scan or not decodable"
	return reply(http.StatusBadGateway, "scan_limit", what, errorJSON("blocked by declaw: "+what), "inbound")
}

func dropRehydrate(ss []stage.Stage) []stage.Stage {
	var out []stage.Stage
	for _, s := range ss {
		if _, ok := s.(*stage.RehydrateStage); !ok {
			out = append(out, s)
		}
	}
	return out
}

// isBinaryMedia reports response types that carry no text to scan for
// injection or tokens to rehydrate (images, audio, video, fonts, archives,
// octet streams): they are passed through unbuffered. Requests are scanned
// whatever their type, since a label is no evidence against exfiltration.
func isBinaryMedia(h http.Header) bool {
	ct := strings.ToLower(strings.TrimSpace(h.Get("Content-Type")))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	for _, p := range []string{"image/", "audio/", "video/", "font/"} {
		if strings.HasPrefix(ct, p) {
			return !strings.HasPrefix(ct, "image/svg")
		}
	}
	switch ct {
	case "application/octet-stream", "binary/octet-stream", "application/zip", "application/gzip",
		"application/x-gzip", "application/x-tar", "application/x-xz", "application/zstd", "application/wasm":
		return true
	}
	return false
}

func isSSE(h http.Header) bool {
	ct := strings.ToLower(h.Get("Content-Type"))
	return strings.HasPrefix(strings.TrimSpace(ct), "text/event-stream")
}

// setBody replaces a request's body with b, decoded: Content-Encoding is
// dropped and the length fixed.
func setBody(r *http.Request, h http.Header, b []byte) {
	h.Del("Content-Encoding")
	h.Del("Transfer-Encoding")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func fillReport(ev *HTTPEvent, ex *stage.Exchange) {
	r := &ex.Report
	ev.PII, ev.PIIAction, ev.Rehydrated = r.PII, r.PIIAction, r.Rehydrated
	ev.Injection, ev.Transformations, ev.Verdicts = r.Injection, r.Transformations, r.Verdicts
	ev.RequestBody, ev.ResponseBody, ev.BodiesTruncated = r.RequestBody, r.ResponseBody, r.BodiesTruncated
	for _, n := range r.Notes {
		if !slices.Contains(ev.Notes, n) {
			ev.Notes = append(ev.Notes, n)
		}
	}
}

func jsonResponse(status int, stg string, body []byte) *http.Response {
	h := http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}}
	if stg != "" && stg != "upstream" {
		h.Set("X-Declaw-Blocked", stg)
	}
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
}

// hopByHop are the connection-level headers never forwarded.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// filterAcceptEncoding keeps only the codings the pipeline can decode.
func filterAcceptEncoding(ae string) string {
	var keep []string
	for _, part := range strings.Split(ae, ",") {
		name := strings.ToLower(strings.TrimSpace(strings.SplitN(part, ";", 2)[0]))
		switch name {
		case "gzip", "x-gzip", "deflate", "br", "zstd", "identity":
			keep = append(keep, strings.TrimSpace(part))
		}
	}
	return strings.Join(keep, ", ")
}

// sseBody streams a text/event-stream response through a stage.SSE.
type sseBody struct {
	r    io.Reader
	c    io.Closer
	sse  *stage.SSE
	out  []byte
	err  error
	buf  []byte
	done bool
}

func (b *sseBody) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.done {
			return 0, b.err
		}
		if b.buf == nil {
			b.buf = make([]byte, 32<<10)
		}
		n, err := b.r.Read(b.buf)
		if n > 0 {
			b.out = b.sse.Write(b.buf[:n])
		}
		if err != nil {
			b.out = append(b.out, b.sse.Flush()...)
			b.done, b.err = true, err
			if err == io.EOF {
				b.err = io.EOF
			}
		}
		if v := b.sse.Blocked(); v != nil && !b.done {
			// Tell the client why the stream ends early.
			b.out = append(b.out, "event: declaw_blocked\ndata: {\"error\":\"blocked by declaw: injection\"}\n\n"...)
			b.done, b.err = true, io.EOF
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

func (b *sseBody) Close() error { return b.c.Close() }

// eventBody counts the bytes sent to the sandbox and emits the exchange's
// event once, at EOF, error or Close.
type eventBody struct {
	rc   io.ReadCloser
	n    int64
	once sync.Once
	done func(n int64, blocked *stage.Verdict)
}

func (b *eventBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *eventBody) Close() error {
	err := b.rc.Close()
	b.finish()
	return err
}

func (b *eventBody) finish() {
	b.once.Do(func() {
		var blocked *stage.Verdict
		if s, ok := b.rc.(*sseBody); ok {
			blocked = s.sse.Blocked()
		}
		b.done(b.n, blocked)
	})
}

// refuseHTTP answers a malformed or oversized plain-HTTP request of a
// content-scanned sandbox with 400 or 431 (and an HTTPEvent) instead of a
// bare reset. It reports false when the sandbox is not content-scanned.
func (p *Proxy) refuseHTTP(s *session, src netip.Addr, ev Event, peeked []byte, err error) bool {
	_, _, cs, ok := p.reg.current(src)
	if !ok || !cs.intercepts() {
		return false
	}
	status, what := http.StatusBadRequest, "malformed request"
	if errors.Is(err, errTooLarge) {
		status, what = http.StatusRequestHeaderFieldsTooLarge, "request header too large"
	} else if !errors.Is(err, ErrMalformed) {
		return false
	}
	hev := HTTPEvent{Time: ev.Time, SandboxID: ev.SandboxID, Src: ev.Src, Dst: ev.Dst, Host: ev.Host,
		Status: status, Direction: "outbound", Decision: DecisionBlock, Stage: "malformed", Reason: what + ": " + clipErr(err)}
	if line, _, ok := bytes.Cut(peeked, []byte("\n")); ok {
		if f := strings.Fields(string(line)); len(f) == 3 {
			hev.Method, hev.Proto = clip(f[0], 32), clip(f[2], 16)
		}
	}
	s.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	writeError(s.client, status, what)
	lingerClose(s.client)
	p.emitHTTP(hev)
	ev.Reason = what
	s.finish()
	p.emit(ev)
	return true
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func clipErr(err error) string { return clip(err.Error(), 200) }

// userSafe strips addresses-heavy detail from dial errors.
func userSafe(err error) string {
	if errors.Is(err, ErrNoUpstream) {
		return "no permitted address for the name"
	}
	return clipErr(err)
}
