package api

import (
	"net/http"
	"strconv"

	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/timeseries"
)

// timeSeriesBody is the answer of GET /api/admin/timeseries.
type timeSeriesBody struct {
	Node       string             `json:"node"`
	IntervalMs int64              `json:"intervalMs"`
	Size       int                `json:"size"`
	Points     []timeseries.Point `json:"points"`
}

// timeSeries answers the admin dashboard's points, to an admin JWT only
// (like the stats): GET /api/admin/timeseries[?since=<Unix ms>] returns
// the points taken after since (all that the ring holds without it),
// oldest first.
func (a *API) timeSeries(w http.ResponseWriter, r *http.Request) {
	if !a.admin(w, r) {
		return
	}
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_request", "since: must be a time in Unix milliseconds")
			return
		}
		since = n
	}
	points := a.series.Points(since)
	if points == nil {
		points = []timeseries.Point{}
	}
	noStore(w)
	httpx.WriteJSON(w, http.StatusOK, timeSeriesBody{
		Node:       a.series.Node(),
		IntervalMs: a.series.Interval().Milliseconds(),
		Size:       a.series.Size(),
		Points:     points,
	})
}

// admin authenticates an admin JWT (an API key carries the service role
// only); on failure it has answered (401, 403 or 429) and returns false.
func (a *API) admin(w http.ResponseWriter, r *http.Request) bool {
	id, ok := a.authenticate(w, r)
	if !ok {
		return false
	}
	if id.APIKey || !id.HasRole(auth.RoleAdmin) {
		httpx.WriteError(w, http.StatusForbidden, auth.CodeForbidden, "this endpoint needs a JWT with the admin role")
		return false
	}
	return true
}
