package microvm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// qmp runs one QMP command on the unix socket at path and returns its
// "return" value: connect, read the greeting, negotiate capabilities, send
// the command, skip asynchronous events until the reply.
func qmp(ctx context.Context, path, command string, args any) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	r := bufio.NewReader(conn)
	type reply struct {
		QMP    json.RawMessage `json:"QMP"`
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
		Event string `json:"event"`
	}
	read := func() (*reply, error) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, err
			}
			var m reply
			if err := json.Unmarshal(line, &m); err != nil {
				return nil, fmt.Errorf("parse %q: %w", line, err)
			}
			if m.Event != "" || m.QMP != nil {
				continue
			}
			if m.Error != nil {
				return nil, fmt.Errorf("%s: %s", m.Error.Class, m.Error.Desc)
			}
			return &m, nil
		}
	}
	send := func(cmd string, args any) (*reply, error) {
		msg := map[string]any{"execute": cmd}
		if args != nil {
			msg["arguments"] = args
		}
		b, _ := json.Marshal(msg)
		if _, err := conn.Write(append(b, '\n')); err != nil {
			return nil, err
		}
		return read()
	}
	if _, err := send("qmp_capabilities", nil); err != nil {
		return nil, fmt.Errorf("qmp %s: negotiate: %w", command, err)
	}
	m, err := send(command, args)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	return m.Return, nil
}
