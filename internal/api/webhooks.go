package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/store"
)

// ownJob returns the caller's durable job record, or 404.
func (s *Server) ownJob(c echo.Context) (*claudeq.Job, error) {
	id := c.Param("id")
	j, err := s.st.Job(c.Request().Context(), id)
	if err != nil {
		if claudeq.ErrorKind(err) == claudeq.KindNotFound {
			if st, serr := s.q.State(c.Request().Context(), id); serr == nil && st.UserID == principalOf(c).UserID {
				return nil, claudeq.Errorf(claudeq.KindConflict, "job %s has not finished yet", id)
			}
		}
		return nil, err
	}
	if j.UserID != principalOf(c).UserID {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
	}
	return j, nil
}

func (s *Server) jobWebhooks(c echo.Context) error {
	j, err := s.ownJob(c)
	if err != nil {
		if claudeq.ErrorKind(err) == claudeq.KindConflict {
			return c.JSON(http.StatusOK, map[string]any{"data": []store.Attempt{}})
		}
		return err
	}
	atts, err := s.st.Attempts(c.Request().Context(), j.ID)
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.jobWebhooks", Msg: "store unavailable", Err: err}
	}
	if atts == nil {
		atts = []store.Attempt{}
	}
	return c.JSON(http.StatusOK, map[string]any{"webhook_url": j.WebhookURL, "data": atts})
}

func (s *Server) redeliver(c echo.Context) error {
	j, err := s.ownJob(c)
	if err != nil {
		return err
	}
	if err := s.wh.Policy.CheckURL(j.WebhookURL); j.WebhookURL != "" && err != nil {
		return err
	}
	id, err := s.wh.Notifier.Redeliver(c.Request().Context(), j, 0)
	if err != nil {
		if claudeq.ErrorKind(err) == claudeq.KindInvalidRequest {
			return err
		}
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.redeliver", Msg: "queue unavailable, try again", Err: err}
	}
	return c.JSON(http.StatusAccepted, map[string]any{"webhook_id": id, "job_id": j.ID})
}

func (s *Server) webhookSecret(c echo.Context) error {
	secrets, err := s.wh.Secrets.Secrets(c.Request().Context(), principalOf(c).UserID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"secrets": secrets})
}

func (s *Server) rotateWebhookSecret(c echo.Context) error {
	grace := s.wh.Grace
	if g := c.QueryParam("grace"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil || d < 0 {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "grace: a duration such as 24h")
		}
		grace = d
	}
	sec, err := s.wh.Secrets.Rotate(c.Request().Context(), principalOf(c).UserID, grace)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"secret": sec, "previous_valid_until": s.now().Add(grace).UTC()})
}
