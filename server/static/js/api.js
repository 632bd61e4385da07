// HTTP access to the server's viewer routes (server/viewer_api.py). Every failure
// becomes an ApiError with a kind the page knows how to explain to a person:
//   "network"      the server could not be reached (retry with backoff)
//   "unauthorized" the server refused the token (do not retry)
//   "forbidden"    the match is not public / not for this token (do not retry)
//   "not_found"    unknown match / route (do not retry)
//   "bad_request"  any other 4xx (a bug or a stale URL)
//   "server"       5xx (retry)
import { decode } from "./msgpack.js";

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

  async #get(path, params = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    let response;
    try {
      response = await fetch(url, { headers, cache: "no-store" });
    } catch (exc) {
      throw new ApiError("network", "network", `cannot reach the server (${exc.message})`);
    }
    if (response.ok) return response;
    let code = "http_" + response.status, message = response.statusText;
    try {
      const body = await response.json();
      // Two error shapes exist on the server: {error, message} and {error: {code, message}}.
      if (typeof body.error === "object") ({ code, message } = body.error);
      else ({ error: code, message } = body);
    } catch { /* a non-JSON error body: keep the status line */ }
    const kind = response.status === 401 ? "unauthorized"
      : response.status === 403 ? "forbidden"
      : response.status === 404 ? "not_found"
      : response.status >= 500 ? "server" : "bad_request";
    throw new ApiError(kind, code, message, response.status);
  }

  async json(path, params) { return (await this.#get(path, params)).json(); }
  async msgpack(path, params) {
    return decode(new Uint8Array(await (await this.#get(path, params)).arrayBuffer()));
  }

  matches() { return this.json("/api/viewer/matches"); }
  match(id) { return this.json(`/api/viewer/matches/${encodeURIComponent(id)}`); }
  /** [base_tick, keyframe bytes]: the fragment base at or before `tick`. */
  state(id, tick) { return this.msgpack(`/api/viewer/matches/${encodeURIComponent(id)}/state`, { tick }); }
  /** [from, to, live_edge, status, batch bytes]. */
  events(id, from, to) {
    return this.msgpack(`/api/viewer/matches/${encodeURIComponent(id)}/events`, { from, to });
  }
  markers(id) { return this.json(`/api/viewer/matches/${encodeURIComponent(id)}/markers`); }
  clip(id, tick, seconds = 5) {
    return this.json(`/api/viewer/matches/${encodeURIComponent(id)}/clip`, { tick, seconds });
  }
  leaderboards() { return this.json("/api/leaderboards"); }
  board(id, limit = 10) { return this.json(`/api/leaderboards/${encodeURIComponent(id)}`, { limit }); }
}
