// The WebSocket to /ws: requests matched to replies by rid, events handed on, a
// heartbeat, and reconnection with exponential backoff and full jitter.
//
// The connection knows nothing about chat: the app tells it what to do once the socket
// opens (log in with the token) through `onOpen`, and hears events through `onEvent`.

const PING_EVERY_MS = 30_000;
const REQUEST_TIMEOUT_MS = 15_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;

/// An error reply from the server (or a local failure), with the protocol's code.
export class ProtocolError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/// Words for a person, for each error code a reply can carry.
const ERROR_WORDS = {
  bad_request: "The server did not accept that request",
  unauthenticated: "You are not logged in",
  auth_failed: "Wrong name or password",
  not_found: "Not found",
  forbidden: "Not allowed",
  conflict: "Already done or taken",
  too_large: "That was too large",
  rate_limited: "Too fast: wait a moment and try again",
  unavailable: "The server is unavailable; try again later",
  internal: "The server failed unexpectedly",
  disconnected: "The connection was lost",
  timeout: "The server did not answer in time",
};

/// A sentence for an error: the code's words and the server's own message.
export function describeError(err) {
  if (err instanceof ProtocolError) {
    const words = ERROR_WORDS[err.code] || err.code;
    return err.message && err.message !== err.code ? `${words}: ${err.message}` : words;
  }
  return String(err && err.message ? err.message : err);
}

export class Connection {
  /// `onState(state, detail)`: "connecting", "online", "waiting" (detail: seconds until
  /// the next attempt) or "stopped". `onEvent(frame)`: every event. `onOpen()`: the socket
  /// is open (returns a promise; a rejection closes the socket and retries).
  constructor({ onState, onEvent, onOpen }) {
    this.onState = onState;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.socket = null;
    this.nextRid = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = true;
    this.ready = false;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  /// Opens the socket (and keeps it open until `stop`).
  start() {
    this.stopped = false;
    this.attempt = 0;
    this.open();
  }

  /// Closes the socket for good: no reconnection.
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000, "bye");
    this.onState("stopped");
  }

  /// Reconnects now instead of waiting for the backoff (a "retry now" button).
  retryNow() {
    if (this.stopped || (this.socket && this.socket.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  open() {
    this.ready = false;
    this.onState("connecting");
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch (err) {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.onopen = async () => {
      try {
        await this.onOpen();
        this.attempt = 0;
        this.ready = true;
        this.onState("online");
        this.startPing();
      } catch (err) {
        // onOpen reported it; a failed token login stops the connection itself.
        if (socket.readyState === WebSocket.OPEN) socket.close(4000, "login failed");
      }
    };
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      clearInterval(this.pingTimer);
      for (const { reject, timer } of this.pending.values()) {
        clearTimeout(timer);
        reject(new ProtocolError("disconnected"));
      }
      this.pending.clear();
      if (!this.stopped) this.scheduleRetry();
    };
  }

  scheduleRetry() {
    // Full jitter: a random wait up to an exponentially growing cap, so that clients a
    // restart disconnected together do not come back together.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const wait = Math.round(Math.random() * cap);
    this.attempt += 1;
    this.onState("waiting", Math.ceil(wait / 1000));
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  startPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      this.request("ping").catch(() => {});
    }, PING_EVERY_MS);
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (err) {
      console.warn("chatd: a frame that is not JSON", err);
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (typeof frame.event === "string") {
      this.onEvent(frame);
      return;
    }
    const waiter = this.pending.get(frame.rid);
    if (!waiter) {
      if (frame.ok === false && frame.error) {
        this.onEvent({ event: "error", error: frame.error });
      }
      return;
    }
    this.pending.delete(frame.rid);
    clearTimeout(waiter.timer);
    if (frame.ok) waiter.resolve(frame);
    else waiter.reject(new ProtocolError(frame.error?.code || "internal", frame.error?.message));
  }

  /// Sends `op` with `fields`; resolves with the reply, rejects with a ProtocolError.
  request(op, fields = {}) {
    return new Promise((resolve, reject) => {
      const socket = this.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new ProtocolError("disconnected"));
        return;
      }
      const rid = this.nextRid++;
      const timer = setTimeout(() => {
        if (this.pending.delete(rid)) reject(new ProtocolError("timeout"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(rid, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...fields, op, rid }));
    });
  }
}
