// HTTP access for the home view: the match list (server/viewer_api.py) and the
// leaderboards (docs/leaderboards.md). The match view uses the websocket spectator
// session instead (spectator.js). Every failure becomes an ApiError with a kind the page
// knows how to explain to a person:
//   "network"      the server could not be reached (retry)
//   "unauthorized" the server refused the token (do not retry)
//   "forbidden"    not allowed for this token (do not retry)
//   "not_found"    unknown route (do not retry)
//   "bad_request"  any other 4xx (a bug or a stale URL)
//   "server"       5xx (retry)
export class ApiError extends Error {
  constructor(kind, code, message, status = 0) {
    super(message);
    this.kind = kind;
    this.code = code;
    this.status = status;
  }
  get retryable() { return this.kind === "network" || this.kind === "server"; }
}

export class Api {
  constructor(token = null) { this.token = token; }

  async json(path, params = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    let response;
    try {
      response = await fetch(url, { headers, cache: "no-store" });
    } catch (exc) {
      throw new ApiError("network", "network", `cannot reach the server (${exc.message})`);
    }
    if (response.ok) return response.json();
    let code = "http_" + response.status, message = response.statusText;
    try {
      ({ code, message } = (await response.json()).error);  // {error: {code, message}}
    } catch { /* a non-JSON error body: keep the status line */ }
    const kind = response.status === 401 ? "unauthorized"
      : response.status === 403 ? "forbidden"
      : response.status === 404 ? "not_found"
      : response.status >= 500 ? "server" : "bad_request";
    throw new ApiError(kind, code, message, response.status);
  }

  matches() { return this.json("/api/viewer/matches"); }
  lineage(id) { return this.json(`/api/viewer/matches/${encodeURIComponent(id)}/lineage`); }
  leaderboards() { return this.json("/api/leaderboards"); }
  board(id, limit = 10) { return this.json(`/api/leaderboards/${encodeURIComponent(id)}`, { limit }); }
}
