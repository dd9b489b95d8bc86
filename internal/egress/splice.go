package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// spliceChunk bounds one zero-copy transfer, so deadlines are refreshed
// and activity recorded at least this often.
const spliceChunk = 1 << 20

// splice replays peeked to up, then copies both ways until both directions
// are done, half-closing each side as its peer finishes sending. Between
// TCP sockets the copies use splice(2) (net.TCPConn.ReadFrom). The
// connection is cut when neither direction has moved a byte for
// IdleTimeout. It returns the bytes sent up (peeked included) and down.
func (p *Proxy) splice(client *net.TCPConn, up net.Conn, peeked []byte) (upBytes, downBytes int64, err error) {
	defer up.Close()
	idle := p.cfg.IdleTimeout
	var last atomic.Int64
	last.Store(time.Now().UnixNano())

	up.SetWriteDeadline(time.Now().Add(idle))
	n, err := up.Write(peeked)
	upBytes = int64(n)
	if err != nil {
		return upBytes, 0, err
	}

	var wg sync.WaitGroup
	var upErr, downErr error
	abort := func() {
		client.Close()
		up.Close()
	}
	wg.Go(func() {
		var n int64
		n, upErr = pipe(up, client, &last, idle)
		upBytes += n
		if upErr != nil {
			abort()
			return
		}
		closeWrite(up)
	})
	wg.Go(func() {
		downBytes, downErr = pipe(client, up, &last, idle)
		if downErr != nil {
			abort()
			return
		}
		closeWrite(client)
	})
	wg.Wait()
	return upBytes, downBytes, errors.Join(upErr, downErr)
}

// pipe copies src to dst in chunks until src's EOF. A deadline that
// expires is not an error while either direction has moved bytes within
// idle (last is the shared time of the last activity).
func pipe(dst, src net.Conn, last *atomic.Int64, idle time.Duration) (int64, error) {
	var total int64
	for {
		deadline := time.Now().Add(idle)
		src.SetReadDeadline(deadline)
		dst.SetWriteDeadline(deadline)
		lr := &io.LimitedReader{R: src, N: spliceChunk}
		n, err := io.Copy(dst, lr)
		total += n
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil && lr.N > 0:
			return total, nil // EOF
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			if n > 0 || time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			return total, errIdle
		}
		return total, err
	}
}

var errIdle = errors.New("idle timeout")

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// prefixConn is the client connection as an Interceptor sees it: reads
// return the peeked bytes first; bytes are counted for the event.
type prefixConn struct {
	*net.TCPConn
	mu      sync.Mutex
	prefix  []byte // +checklocks:mu
	read    atomic.Int64
	written atomic.Int64
}

func (c *prefixConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		c.mu.Unlock()
		c.read.Add(int64(n))
		return n, nil
	}
	c.mu.Unlock()
	n, err := c.TCPConn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *prefixConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// ReadFrom and WriteTo would bypass the prefix and the counters.
func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

func (c *prefixConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}
