package declaw

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
)

// BuildStatus is a template build (POST /templates/build, GET /templates/builds/{id}).
type BuildStatus struct {
	BuildID    string   `json:"build_id"`
	Status     string   `json:"status"` // building, completed or failed
	TemplateID string   `json:"template_id"`
	Alias      string   `json:"alias"`
	Reason     string   `json:"reason,omitempty"`
	Step       string   `json:"step,omitempty"`
	Logs       []string `json:"logs"`
	NextOffset int      `json:"next_offset"`
}

// BuildTemplate builds a custom template and, unless req asks for a
// background build, answers once it ended (status completed or failed,
// with the failing step and reason). req is a TemplateBuildRequest (or any
// value marshalling to that JSON); context, if not nil, is a tar (gzip or
// not) of the build context for the copies, sent as a multipart part.
func (c *Client) BuildTemplate(ctx context.Context, req any, context io.Reader) (*BuildStatus, error) {
	var out BuildStatus
	if context == nil {
		return &out, c.call(ctx, request{method: http.MethodPost, path: "/templates/build", json: req}, &out)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			part, err := mw.CreateFormField("request")
			if err != nil {
				return err
			}
			if err := json.NewEncoder(part).Encode(req); err != nil {
				return err
			}
			fw, err := mw.CreateFormFile("context", "context.tar.gz")
			if err != nil {
				return err
			}
			if _, err := io.Copy(fw, context); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	r := request{method: http.MethodPost, path: "/templates/build", body: pr, size: -1,
		header: http.Header{"Content-Type": {mw.FormDataContentType()}}}
	return &out, c.call(ctx, r, &out)
}

// Build returns a build's status with its log lines from offset on.
func (c *Client) Build(ctx context.Context, id string, offset int) (*BuildStatus, error) {
	var out BuildStatus
	return &out, c.call(ctx, request{method: http.MethodGet, path: "/templates/builds/" + url.PathEscape(id), query: "offset=" + strconv.Itoa(offset)}, &out)
}

// FollowBuild streams a build's log lines from offset on to fn and
// returns its final status.
func (c *Client) FollowBuild(ctx context.Context, id string, offset int, fn func(line string)) (*BuildStatus, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/templates/builds/" + url.PathEscape(id) + "/logs",
		query: "follow=true&offset=" + strconv.Itoa(offset), accept: "text/event-stream"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sse := NewSSEReader(resp.Body)
	for {
		ev, err := sse.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("build %s: the log stream ended without a status", id)
		}
		if err != nil {
			return nil, fmt.Errorf("build %s: log stream: %w", id, err)
		}
		switch ev.Name {
		case "log":
			var l struct {
				Line string `json:"line"`
			}
			if json.Unmarshal([]byte(ev.Data), &l) == nil && fn != nil {
				fn(l.Line)
			}
		case "status":
			var st BuildStatus
			if err := json.Unmarshal([]byte(ev.Data), &st); err != nil {
				return nil, fmt.Errorf("build %s: status event: %w", id, err)
			}
			return &st, nil
		}
	}
}

// CancelBuild cancels a running build.
func (c *Client) CancelBuild(ctx context.Context, id string) (*BuildStatus, error) {
	var out BuildStatus
	return &out, c.call(ctx, request{method: http.MethodDelete, path: "/templates/builds/" + url.PathEscape(id)}, &out)
}

// Templates lists the templates (GET /templates), built-in and custom.
func (c *Client) Templates(ctx context.Context) ([]TemplateInfo, error) {
	var out struct {
		Templates []TemplateInfo `json:"templates"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/templates"}, &out); err != nil {
		return nil, err
	}
	if out.Templates == nil {
		out.Templates = []TemplateInfo{}
	}
	return out.Templates, nil
}

// Template returns one template by id or alias.
func (c *Client) Template(ctx context.Context, idOrAlias string) (*TemplateInfo, error) {
	var out TemplateInfo
	if err := c.call(ctx, request{method: http.MethodGet, path: "/templates/" + url.PathEscape(idOrAlias)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTemplate deletes a template; force kills the sandboxes using it first.
func (c *Client) DeleteTemplate(ctx context.Context, idOrAlias string, force bool) error {
	q := ""
	if force {
		q = "force=true"
	}
	return c.call(ctx, request{method: http.MethodDelete, path: "/templates/" + url.PathEscape(idOrAlias), query: q}, nil)
}
