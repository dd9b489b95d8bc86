package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// sandboxConnect runs "declaw sandbox connect ID": an interactive shell on
// a PTY in the sandbox, with the local terminal in raw mode. envd replays
// a PTY's output from its start to its first stream, so the shell's first
// prompt is not lost between the create and the stream.
func sandboxConnect(c *clientCmd, args []string) int {
	user := c.fs.String("user", "", "user to run the shell as (default: root)")
	cwd := c.fs.String("cwd", "", "working directory (default: the user's home)")
	timeout := c.fs.Float64("timeout", 0, "seconds before the session is killed (0: none)")
	pos, _, _, ok := c.parse(args, 1, 1)
	if !ok {
		return 2
	}
	cl, err := c.client()
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	s := &ptySession{
		cl: cl, id: pos[0], in: c.e.stdin, out: c.e.stdout,
		req: declaw.PtyRequest{Size: declaw.PtySize{Cols: 80, Rows: 24}, User: *user, Cwd: *cwd, Timeout: timeout},
	}
	in, _ := c.e.stdin.(*os.File)
	tty := in != nil && term.IsTerminal(int(in.Fd()))
	restore := func() {}
	if tty {
		fd := int(in.Fd())
		if size, ok := termSize(fd); ok {
			s.req.Size = size
		}
		old, err := term.MakeRaw(fd)
		if err != nil {
			return c.fail(fmt.Errorf("raw mode: %w", err))
		}
		restore = sync.OnceFunc(func() { term.Restore(fd, old) })
		defer restore()
		resize := make(chan declaw.PtySize, 1)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer func() { signal.Stop(winch); close(winch) }()
		go func() {
			for range winch {
				if size, ok := termSize(fd); ok {
					select { // keep only the latest size
					case <-resize:
					default:
					}
					resize <- size
				}
			}
		}()
		s.resize = resize
	} else {
		s.eotOnEOF = true
		if out, ok := c.e.stdout.(*os.File); ok {
			if size, ok := termSize(int(out.Fd())); ok {
				s.req.Size = size
			}
		}
	}
	code, err := s.run(ctx)
	restore()
	if err != nil {
		if tty {
			io.WriteString(c.e.stdout, "\r\n")
		}
		if ctx.Err() != nil {
			fmt.Fprintf(c.e.stderr, "%s: interrupted; the session was killed\n", c.name)
			return exitInterrupted
		}
		return c.fail(err)
	}
	return exitCode(code)
}

func termSize(fd int) (declaw.PtySize, bool) {
	cols, rows, err := term.GetSize(fd)
	if err != nil || cols <= 0 || rows <= 0 || cols > 65535 || rows > 65535 {
		return declaw.PtySize{}, false
	}
	return declaw.PtySize{Cols: uint16(cols), Rows: uint16(rows)}, true
}

// ptySession is one connect: it starts a PTY process, attaches its output
// to out, forwards in as typed text and resize events, and ends with the
// process.
type ptySession struct {
	cl     *declaw.Client
	id     string
	req    declaw.PtyRequest
	in     io.Reader
	out    io.Writer
	resize <-chan declaw.PtySize
	// eotOnEOF types ^D when in ends (in is not a terminal), so a shell
	// fed from a pipe exits after its input.
	eotOnEOF bool
}

// run runs the session and returns the remote exit code. When it returns
// an error (ctx cancelled, stream lost), it has tried to kill the process.
func (s *ptySession) run(ctx context.Context) (int, error) {
	pid, err := s.cl.CreatePty(ctx, s.id, s.req)
	if err != nil {
		return 0, err
	}
	kill := func() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.cl.KillPty(kctx, s.id, pid)
	}
	stream, err := s.cl.StreamPty(ctx, s.id, pid)
	if err != nil {
		kill()
		return 0, err
	}
	defer stream.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type end struct {
		code int
		err  error
	}
	ended := make(chan end, 1)
	go func() {
		for {
			ev, err := stream.Next()
			if err != nil {
				ended <- end{err: err}
				return
			}
			if ev.Type == "exit" {
				ended <- end{code: ev.ExitCode}
				return
			}
			if _, err := s.out.Write(ev.Data); err != nil {
				ended <- end{err: fmt.Errorf("write output: %w", err)}
				return
			}
		}
	}()
	inputErr := make(chan error, 1)
	go func() { inputErr <- s.forwardInput(ctx, pid) }()

	for {
		select {
		case e := <-ended:
			if e.err != nil {
				kill()
				return 0, e.err
			}
			return e.code, nil
		case size := <-s.resize:
			if err := s.cl.ResizePty(ctx, s.id, pid, size); err != nil && ctx.Err() == nil {
				// the process may just have exited; its exit event follows
				select {
				case e := <-ended:
					return e.code, e.err
				case <-time.After(2 * time.Second):
					kill()
					return 0, fmt.Errorf("resize: %w", err)
				}
			}
		case err := <-inputErr:
			inputErr = nil
			if err != nil && ctx.Err() == nil {
				select {
				case e := <-ended:
					return e.code, e.err
				case <-time.After(2 * time.Second):
					kill()
					return 0, fmt.Errorf("send input: %w", err)
				}
			}
		case <-ctx.Done():
			kill()
			return 0, ctx.Err()
		}
	}
}

// forwardInput sends what is read from s.in as text, one request at a time
// (so keystrokes keep their order), never splitting a UTF-8 sequence.
func (s *ptySession) forwardInput(ctx context.Context, pid int) error {
	buf := make([]byte, 32<<10)
	var carry []byte
	for {
		n, rerr := s.in.Read(buf)
		data := append(carry, buf[:n]...)
		data, carry = splitUTF8(data)
		carry = append([]byte(nil), carry...)
		if len(data) > 0 {
			if err := s.cl.SendPtyInput(ctx, s.id, pid, string(data)); err != nil {
				return err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) && s.eotOnEOF {
				if len(carry) > 0 {
					s.cl.SendPtyInput(ctx, s.id, pid, string(carry))
				}
				return s.cl.SendPtyInput(ctx, s.id, pid, "\x04")
			}
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return fmt.Errorf("read stdin: %w", rerr)
		}
	}
}

// splitUTF8 splits b before a trailing incomplete UTF-8 sequence.
func splitUTF8(b []byte) (complete, rest []byte) {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i], b[i:]
			}
			break
		}
	}
	return b, nil
}
