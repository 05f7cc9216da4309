// cutover dashboard. Plain JavaScript, no build step, nothing fetched from elsewhere.
//
// The admin token lives in sessionStorage (this tab only) and goes out as
// `Authorization: Bearer`, never in a cookie or a URL. Live data comes from
// GET /dashboard/events (Server-Sent Events, read with fetch so that the token can be sent);
// actions call the admin API's own endpoints. Every value from the server is written with
// textContent or as an SVG attribute, never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "cutover.admin-token";
  const STALE_MS = 5000; // no event for this long: the stream is presumed dead
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    needsToken: true,
    controller: null,
    retryMs: 1000,
    lastEvent: 0,
    snapshot: null,
    rendered: {}, // section -> JSON last rendered (a section is redrawn only when it changed)
    colors: {}, // backend -> colour index, stable for the page's life
    forms: {}, // route -> its weights form (kept across snapshots: edits survive)
    connected: false,
  };
  window.cutoverDashboard = state; // for tests and curious operators: read-only use

  // -- small DOM helpers --------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
    return el;
  }

  function fill(id, ...children) {
    const el = $(id);
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
    return el;
  }

  function changed(section, data) {
    const text = JSON.stringify(data === undefined ? null : data);
    if (state.rendered[section] === text) return false;
    state.rendered[section] = text;
    return true;
  }

  const pct = (x, digits = 2) =>
    x === null || x === undefined ? "–" : (x * 100).toFixed(digits) + "%";
  const ms = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1) + " ms");
  const num = (x) => (x === null || x === undefined ? "–" : String(x));
  // API times are RFC 3339 strings; the series' are Unix seconds
  const dateOf = (t) => new Date(typeof t === "number" ? t * 1000 : t);
  const when = (t) => {
    if (t === null || t === undefined) return "–";
    const d = dateOf(t);
    return isNaN(d) ? String(t) : d.toLocaleTimeString([], { hour12: false });
  };
  const whenFull = (t) => {
    const d = dateOf(t);
    return isNaN(d) ? String(t) : d.toLocaleString([], { hour12: false });
  };
  const isoOf = (t) => {
    const d = dateOf(t);
    return isNaN(d) ? "" : d.toISOString();
  };
  const weightsText = (w) =>
    w ? Object.entries(w).map(([b, n]) => `${b} ${n}`).join(" / ") : "–";

  function colorOf(backend) {
    if (!(backend in state.colors)) state.colors[backend] = Object.keys(state.colors).length % 6;
    return "c" + state.colors[backend];
  }

  const NUMERIC = /^(#|calls|callers|requests|errors|p50|p95|pending|dead|attempts|success|diff|days|count|sent|failed)/i;

  // A table of text cells (a cell may be a ready <td>); numeric columns align right.
  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted", text: empty });
    const numeric = headers.map((t) => NUMERIC.test(t));
    const cell = (c, i) =>
      c instanceof Node && c.tagName === "TD" ? c : h("td", { class: numeric[i] ? "num" : null }, c);
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { scope: "col", class: numeric[i] ? "num" : null, text: t })))),
        h("tbody", {}, rows.map((r) => h("tr", {}, r.map(cell))))
      )
    );
  }

  function badge(text, tone) {
    return h("span", { class: `badge ${tone || "muted"}`, text });
  }

  function toast(text, bad) {
    const el = $("toast");
    el.textContent = text;
    el.className = bad ? "toast bad" : "toast";
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (el.hidden = true), 6000);
  }

  // -- token and session --------------------------------------------------------------------

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function showLogin(message) {
    disconnect();
    state.snapshot = null;
    state.rendered = {};
    state.forms = {};
    for (const id of ["routes", "plots", "canary", "timeline", "parity", "compat", "publishing", "alerts"]) fill(id);
    $("board").hidden = true;
    $("login").hidden = false;
    $("signout").hidden = true;
    $("who").textContent = "";
    $("login-error").textContent = message || "";
    setConn("idle", "not connected");
    $("token").value = "";
    $("token").focus();
  }

  function forgetToken(message) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  async function whoami() {
    // 200: the token (or none, where the server needs none) is accepted; 401: it is not.
    const resp = await fetch("/admin/whoami", { headers: authHeaders(), cache: "no-store" });
    if (resp.status === 401) return null;
    if (!resp.ok) throw new Error(`the admin API answered ${resp.status}`);
    return resp.json();
  }

  async function open() {
    let who;
    try {
      who = await whoami();
    } catch (err) {
      setConn("disconnected", "admin API unreachable");
      setTimeout(open, 3000);
      return;
    }
    if (who === null) {
      if (state.token) forgetToken("The token was refused (wrong, rotated or expired). Enter it again.");
      else showLogin("");
      return;
    }
    $("login").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = !state.token;
    $("who").textContent = who.actor ? `acting as ${who.actor}` : "";
    connect();
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("login-error").textContent = "";
    open();
  });
  $("signout").addEventListener("click", () => forgetToken(""));

  // -- the live stream ----------------------------------------------------------------------

  function setConn(kind, text) {
    const el = $("conn");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function disconnect() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.connected = false;
    clearTimeout(state.reconnectTimer);
  }

  function scheduleReconnect(why) {
    state.connected = false;
    if (state.controller === null) return; // stopped on purpose
    setConn("reconnecting", `disconnected (${why}); reconnecting…`);
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  }

  async function connect() {
    disconnect();
    const controller = new AbortController();
    state.controller = controller;
    setConn("connecting", "connecting…");
    let resp;
    try {
      resp = await fetch("/dashboard/events", {
        headers: { ...authHeaders(), Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted && state.controller !== controller) return;
      scheduleReconnect("no connection");
      return;
    }
    if (resp.status === 401) {
      forgetToken("The token was refused (wrong, rotated or expired). Enter it again.");
      return;
    }
    if (!resp.ok || !resp.body) {
      scheduleReconnect(`HTTP ${resp.status}`);
      return;
    }
    state.lastEvent = Date.now();
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          onBlock(block);
        }
      }
    } catch (err) {
      if (state.controller !== controller) return; // replaced or stopped on purpose
    }
    if (state.controller === controller) scheduleReconnect("stream ended");
  }

  function onBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) state.retryMs = Number(value);
    }
    state.lastEvent = Date.now();
    if (!state.connected) {
      state.connected = true;
      state.retryMs = 1000;
    }
    setConn("live", "live");
    if (event === "snapshot" && data.length) {
      let snap;
      try {
        snap = JSON.parse(data.join("\n"));
      } catch (err) {
        return;
      }
      state.snapshot = snap;
      render(snap);
    }
  }

  setInterval(() => {
    if (state.controller && state.connected && Date.now() - state.lastEvent > STALE_MS) {
      const c = state.controller;
      state.connected = false;
      scheduleReconnect("no data for 5 s");
      c.abort();
    }
  }, 1000);

  // -- actions ------------------------------------------------------------------------------

  function confirmAction(title, text) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-reason").value = "";
    return new Promise((resolve) => {
      const done = (ok) => {
        $("confirm-ok").removeEventListener("click", yes);
        $("confirm-cancel").removeEventListener("click", no);
        dialog.removeEventListener("cancel", no);
        if (dialog.open) dialog.close();
        resolve(ok ? $("confirm-reason").value : null);
      };
      const yes = () => done(true);
      const no = (ev) => {
        if (ev) ev.preventDefault();
        done(false);
      };
      $("confirm-ok").addEventListener("click", yes);
      $("confirm-cancel").addEventListener("click", no);
      dialog.addEventListener("cancel", no);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function call(method, path, body, extraHeaders) {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: { ...authHeaders(), "Content-Type": "application/json", ...(extraHeaders || {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      toast("The admin API could not be reached.", true);
      return null;
    }
    if (resp.status === 401) {
      forgetToken("The token was refused (wrong, rotated or expired). Enter it again.");
      return null;
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (err) {
      data = null;
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message ? data.error.message : `HTTP ${resp.status}`;
      toast(`Refused: ${message}`, true);
      return null;
    }
    return data;
  }

  async function command(kind, route, title, text) {
    const reason = await confirmAction(title, text);
    if (reason === null) return;
    const data = await call("POST", `/admin/${kind}`, { route, reason: reason || `${kind} from the dashboard` });
    if (data) {
      const r = (data.results || [])[0] || {};
      toast(`${kind}: ${r.reason || "done"} (weights ${weightsText(r.weights)})`);
    }
  }

  async function setWeights(route, weights) {
    const total = Object.values(weights).reduce((a, b) => a + b, 0);
    if (total !== 100) {
      toast(`The weights must sum to 100 (now ${total}).`, true);
      return;
    }
    const reason = await confirmAction(
      `Set the weights of ${route}`,
      `New weights: ${weightsText(weights)}. New requests follow them at once.`
    );
    if (reason === null) return;
    const headers = reason ? { "X-Cutover-Reason": reason } : {};
    const data = await call("PUT", `/admin/routes/${encodeURIComponent(route)}/weights`, weights, headers);
    if (data) {
      toast(`Weights of ${route}: ${weightsText(data.weights)}`);
      const form = state.forms[route];
      if (form) form.dirty = false;
    }
  }

  async function replay(job) {
    const reason = await confirmAction(
      `Replay dead letter #${job.id}`,
      `Put the ${job.target} delivery of ${job.alertname || job.fingerprint} back in line.`
    );
    if (reason === null) return;
    const data = await call("POST", `/admin/publishing/dlq/${encodeURIComponent(job.id)}/replay`);
    if (data) toast(`Dead letter #${data.replayed} is pending again.`);
  }

  // -- rendering ----------------------------------------------------------------------------

  function render(snap) {
    const panels = snap.panels || {};
    const canary = panels.canary || null;
    renderRoutes(snap, canary);
    renderPlots(snap);
    renderCanary(canary);
    renderTimeline(canary);
    renderParity(panels.parity);
    renderCompat(panels.compat);
    renderPublishing(panels.publishing);
    renderAlerts(panels.alerts);
    const notice = snap.draining ? "The gateway is shutting down." : "";
    $("notice").hidden = !notice;
    $("notice").textContent = notice;
  }

  function weightBar(weights) {
    return h(
      "div",
      { class: "bar", role: "img", "aria-label": `weights ${weightsText(weights)}` },
      Object.entries(weights)
        .filter(([, n]) => n > 0)
        .map(([b, n]) => {
          const span = h("span", { class: colorOf(b), title: `${b} ${n}%`, text: `${b} ${n}%` });
          span.style.width = n + "%";
          return span;
        })
    );
  }

  function routeForm(name, weights, hasCanary) {
    let form = state.forms[name];
    if (!form) {
      const inputs = {};
      const fields = Object.keys(weights).map((b) => {
        const id = `w-${name}-${b}`.replace(/[^A-Za-z0-9_-]/g, "_");
        inputs[b] = h("input", { id, type: "number", min: 0, max: 100, step: 1, inputmode: "numeric", "data-backend": b });
        inputs[b].addEventListener("input", () => (form.dirty = true));
        return [h("label", { for: id, text: b }), inputs[b]];
      });
      const apply = h("button", { type: "submit", "data-action": "weights", text: "Set weights" });
      const el = h("form", { class: "weights-form", "data-route": name }, fields, apply);
      el.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const w = {};
        for (const [b, input] of Object.entries(inputs)) w[b] = Number.parseInt(input.value, 10) || 0;
        setWeights(name, w);
      });
      const button = (kind, label, tone, text) =>
        h("button", {
          type: "button",
          class: tone,
          "data-action": kind,
          "data-route": name,
          text: label,
          onclick: () => command(kind, name, `${label} ${name}?`, text),
        });
      const actions = hasCanary
        ? h(
            "div",
            { class: "actions" },
            button("promote", "Promote", null, "Move the candidate to its next step."),
            button("pause", "Pause", null, "Hold the canary where it is: no automatic step."),
            button("resume", "Resume", null, "Let the controller judge and step again."),
            button("rollback", "Roll back", "danger", "Send all traffic of this route back to the baseline. The rollback latches until resumed.")
          )
        : null;
      form = state.forms[name] = { el, inputs, actions, dirty: false };
    }
    for (const [b, input] of Object.entries(form.inputs)) {
      if (!form.dirty && document.activeElement !== input) input.value = weights[b] ?? 0;
    }
    return form;
  }

  function renderRoutes(snap, canary) {
    const views = {};
    for (const v of (canary && canary.routes) || []) views[v.name] = v;
    const data = { routes: snap.routes, views };
    if (!changed("routes", data)) return;
    const cards = snap.routes.map((r) => {
      const v = views[r.name] || {};
      const weights = v.weights || r.weights;
      const form = routeForm(r.name, weights, Boolean(v.canary));
      const health = Object.entries(r.backends).map(([b, x]) =>
        h("span", {}, badge(`${b} ${x.healthy ? "healthy" : "down"}`, x.healthy ? "good" : "bad"), " ")
      );
      const kv = h(
        "dl",
        { class: "kv" },
        h("dt", { text: "weights" }),
        h("dd", { "data-field": "weights", text: weightsText(weights) }),
        h("dt", { text: "source" }),
        h("dd", { text: v.source || "config" }),
        v.phase ? [h("dt", { text: "phase" }), h("dd", { "data-field": "phase" }, v.phase, v.latched ? " (latched)" : "")] : null,
        v.changed_by ? [h("dt", { text: "changed by" }), h("dd", { text: v.changed_by })] : null,
        v.reason ? [h("dt", { text: "why" }), h("dd", { text: v.reason })] : null,
        h("dt", { text: "backends" }),
        h("dd", {}, health)
      );
      return h("article", { class: "card", "data-route": r.name }, h("h3", { text: r.name }), weightBar(weights), kv, form.el, form.actions);
    });
    const focused = document.activeElement;
    fill("routes", cards);
    // The forms and buttons are the same elements, moved into the new cards: keep the focus.
    if (focused && focused !== document.body && document.contains(focused) && document.activeElement !== focused) {
      focused.focus();
    }
  }

  // A time-series plot drawn as SVG: one line per series, gaps where a value is null.
  function plot(title, t, series, opts) {
    const W = 600, H = 150, L = 44, R = 8, T = 8, B = 18;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
    let max = 0, points = 0;
    for (const x of series) for (const v of x.values) if (v !== null && v !== undefined) max = Math.max(max, v);
    if (opts && opts.max !== undefined) max = Math.max(max, opts.max);
    if (max <= 0) max = 1;
    const n = Math.max(t.length, 2);
    const xAt = (i) => L + ((W - L - R) * i) / (n - 1);
    const yAt = (v) => T + (H - T - B) * (1 - v / max);
    for (const f of [0, 0.5, 1]) {
      const y = yAt(max * f);
      svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
      svg.append(s("text", { x: L - 4, y: y + 3, "text-anchor": "end", text: opts.format(max * f) }));
    }
    if (t.length) {
      const seconds = t[t.length - 1] - t[0] + 1;
      const span = seconds < 120 ? `−${seconds} s` : `−${Math.round(seconds / 60)} min`;
      svg.append(s("text", { x: L, y: H - 4, text: span }));
      svg.append(s("text", { x: W - R, y: H - 4, "text-anchor": "end", text: "now" }));
    }
    for (const x of series) {
      let d = "", pen = false;
      x.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        points++;
        d += `${pen ? "L" : "M"}${xAt(i).toFixed(1)} ${yAt(v).toFixed(1)}`;
        pen = true;
      });
      if (d) svg.append(s("path", { class: `line ${x.color}${x.dashed ? " dashed" : ""}`, d, "data-series": x.name }));
    }
    const legend = h(
      "div",
      { class: "legend" },
      series.map((x) => h("span", {}, h("i", { class: x.color }), x.name))
    );
    return h("figure", { class: "plot", "data-plot": opts.id, "data-points": points }, h("h3", { text: title }), svg, legend);
  }

  function renderPlots(snap) {
    const series = snap.series || { t: [], backends: {}, weights: {} };
    const t = series.t || [];
    const backends = Object.entries(series.backends || {});
    $("series-scope").textContent = `(traffic of worker ${snap.worker}, ${t.length} s)`;
    const plots = [
      plot("Requests per second", t, backends.map(([b, x]) => ({ name: b, color: colorOf(b), values: x.rps })), { id: "rps", format: (v) => v.toFixed(v < 10 ? 1 : 0) }),
      plot("Error rate", t, backends.map(([b, x]) => ({ name: b, color: colorOf(b), values: x.error_rate })), { id: "errors", format: (v) => (v * 100).toFixed(1) + "%", max: 0.01 }),
      plot(
        "Latency p50 (solid) and p95 (dashed)",
        t,
        backends.flatMap(([b, x]) => [
          { name: `${b} p50`, color: colorOf(b), values: x.p50_ms },
          { name: `${b} p95`, color: colorOf(b), values: x.p95_ms, dashed: true },
        ]),
        { id: "latency", format: (v) => v.toFixed(v < 10 ? 1 : 0) + " ms" }
      ),
    ];
    for (const [route, w] of Object.entries(series.weights || {})) {
      plots.push(
        plot(`Weights of ${route}`, t, Object.entries(w).map(([b, values]) => ({ name: b, color: colorOf(b), values })), { id: `weights-${route}`, format: (v) => v.toFixed(0) + "%", max: 100 })
      );
    }
    fill("plots", plots);
  }

  function verdictTone(status) {
    if (/fail|rollback|bad/i.test(status)) return "bad";
    if (/pass|healthy|ok/i.test(status)) return "good";
    return "warn";
  }

  function renderCanary(canary) {
    const data = canary ? canary.canary : null;
    if (!changed("canary", data)) return;
    if (!canary || !data || !data.length) {
      fill("canary", h("p", { class: "muted", text: "No route has a canary (no canary block applies)." }));
      return;
    }
    fill(
      "canary",
      h(
        "div",
        { class: "cards" },
        data.map((c) => {
          const side = (label, x) => [
            label,
            x.backend,
            num(x.requests),
            pct(x.error_rate),
            ms(x.p50_ms),
            ms(x.p95_ms),
          ];
          const checks = (c.verdict.checks || []).map((k) =>
            h("li", { class: k.failed ? "bad" : "" }, h("strong", { text: k.criterion }), ": ", k.detail)
          );
          return h(
            "article",
            { class: "card", "data-canary": c.route },
            h("h3", {}, c.route, " ", badge(c.verdict.status, verdictTone(c.verdict.status))),
            h("p", { "data-field": "verdict-reason", text: c.verdict.reason || "" }),
            table(["side", "backend", "requests", "errors", "p50", "p95"], [side("baseline", c.baseline), side("candidate", c.candidate)], ""),
            h("ul", {}, checks),
            h(
              "dl",
              { class: "kv" },
              h("dt", { text: "phase" }),
              h("dd", {}, c.phase, c.latched ? " (latched)" : ""),
              h("dt", { text: "candidate weight" }),
              h("dd", { text: `${c.weight}%` + (c.next_step !== null && c.next_step !== undefined ? ` → next step ${c.next_step}%` : "") }),
              h("dt", { text: "window" }),
              h("dd", { text: `${c.window_s} s` }),
              h("dt", { text: "criteria" }),
              h("dd", { text: `error rate ≤ ${pct(c.criteria.max_error_rate)}, p95 ≤ ${c.criteria.max_p95_ratio}× baseline, ≥ ${c.criteria.min_requests} requests` }),
              c.promotion && c.promotion.held ? [h("dt", { text: "held" }), h("dd", { text: c.promotion.held })] : null
            )
          );
        })
      )
    );
  }

  function renderTimeline(canary) {
    const events = canary ? canary.events : null;
    const data = { events, store: canary ? canary.events_store : null };
    if (!changed("timeline", data)) return;
    if (!canary) {
      fill("timeline");
      return;
    }
    if (events === null) {
      fill("timeline", h("li", { class: "bad", text: "The event store is unavailable; events wait in memory." }));
      return;
    }
    if (!events.length) {
      fill("timeline", h("li", { class: "muted", text: "No events yet." }));
      return;
    }
    fill(
      "timeline",
      events.map((e) =>
        h(
          "li",
          { "data-event-kind": e.kind, "data-event-id": e.id },
          h("time", { datetime: isoOf(e.at), title: whenFull(e.at), text: when(e.at) }),
          h("span", { class: `kind kind-${e.kind}`, text: e.kind }),
          h(
            "span",
            { class: "detail" },
            h("strong", { text: e.route }),
            " · ",
            e.actor,
            " · ",
            h("span", { "data-field": "reason", text: e.reason || "" }),
            e.weights_before && e.weights_after && JSON.stringify(e.weights_before) !== JSON.stringify(e.weights_after)
              ? h("span", { class: "muted", text: ` · ${weightsText(e.weights_before)} → ${weightsText(e.weights_after)}` })
              : null
          )
        )
      )
    );
  }

  function renderParity(parity) {
    if (!changed("parity", parity)) return;
    if (!parity) {
      fill("parity", h("p", { class: "muted", text: "Parity is off (no route mirrors)." }));
      return;
    }
    const routes = Object.entries(parity.routes || {});
    const parts = [];
    if (parity.store && parity.store !== "ok") parts.push(h("p", { class: "bad", text: `store ${parity.store}: the figures are this worker's` }));
    if (!routes.length) parts.push(h("p", { class: "muted", text: "No route mirrors traffic." }));
    for (const [name, r] of routes) {
      parts.push(h("h3", {}, `${name} → ${r.mirror.to} (${r.mirror.percent}% mirrored): `, `parity ${r.parity_rate === null ? "not enough samples" : pct(r.parity_rate)}`, h("small", { text: ` · ${r.compared} compared` })));
      parts.push(
        table(
          ["endpoint", "requests", "diff rate", "differing fields", "example"],
          r.endpoints.map((e) => {
            const ex = (e.examples || [])[0];
            return [
              e.endpoint,
              h("td", { class: "num", text: num(e.requests) }),
              h("td", { class: "num", text: pct(e.diff_rate) }),
              e.fields.map((f) => h("div", { text: `${f.field} (${pct(f.raw_rate, 1)})` })),
              ex
                ? h("pre", { text: `${ex.request.method} ${ex.request.path}\n` + ex.differences.slice(0, 3).map((d) => `${d.path || d.field}: ${shown(d.primary)} ≠ ${shown(d.candidate)}`).join("\n") })
                : "–",
            ];
          }),
          "Nothing compared yet."
        )
      );
    }
    fill("parity", parts);
  }

  const shown = (v) => (typeof v === "string" ? v : JSON.stringify(v ?? null));

  function renderCompat(compat) {
    if (!changed("compat", compat)) return;
    if (!compat) {
      fill("compat", h("p", { class: "muted", text: "Compat is off (no compat section)." }));
      return;
    }
    const note = compat.stored === false ? h("p", { class: "warn", text: "The store is unavailable: counts still in memory are shown." }) : null;
    fill(
      "compat",
      note,
      table(
        ["rule", "calls", "callers", "sunset"],
        (compat.rules || []).map((r) => [r.rule, h("td", { class: "num", text: num(r.calls) }), h("td", { class: "num", text: num(r.callers) }), r.sunset || "–"]),
        "No legacy rules."
      ),
      h("h3", { text: "Callers" }),
      table(
        ["rule", "caller", "kind", "count", "last seen", "days to sunset"],
        (compat.callers || []).slice(0, 50).map((c) => [
          c.rule,
          c.caller,
          c.kind,
          h("td", { class: "num", text: num(c.count) }),
          c.last_seen || "–",
          h("td", { class: "num " + (c.days_to_sunset !== null && c.days_to_sunset < 14 ? "bad" : ""), text: num(c.days_to_sunset) }),
        ]),
        "No legacy call counted yet."
      )
    );
  }

  function renderPublishing(pub) {
    if (!changed("publishing", pub)) return;
    if (!pub) {
      fill("publishing", h("p", { class: "muted", text: "Publishing is off (no publishing or alerts section)." }));
      return;
    }
    const stats = {};
    for (const x of (pub.stats && pub.stats.targets) || []) stats[x.name] = x;
    const tone = (health) => (health === "healthy" ? "good" : health === "unknown" ? "muted" : "bad");
    const parts = [
      h("p", {}, "mode ", badge(pub.mode, pub.mode === "normal" ? "good" : "warn"), pub.store && pub.store !== "ok" ? h("span", { class: "bad", text: ` · store ${pub.store}` }) : null),
      table(
        ["target", "type", "health", "breaker", "rate limit", "success rate", "sent", "failed", "pending", "dead letters"],
        (pub.targets || []).map((t) => {
          const x = stats[t.name] || {};
          return [
            t.name,
            t.type || "–",
            badge(t.health || "unknown", tone(t.health)),
            t.breaker || "–",
            t.rate_limit || "–",
            h("td", { class: "num", text: pct(t.success_rate, 1) }),
            h("td", { class: "num", text: num(x.sent ?? t.successful_publishes) }),
            h("td", { class: "num", text: num(x.failed ?? t.failed_publishes) }),
            h("td", { class: "num", text: num(x.pending) }),
            h("td", { class: "num", text: num(x.dead_letters) }),
          ];
        }),
        "No publishing target."
      ),
      h("h3", { text: "Dead letters" }),
      pub.dead_letters === null || pub.dead_letters === undefined
        ? h("p", { class: "muted", text: "Not readable now." })
        : table(
            ["#", "target", "alert", "attempts", "last error", ""],
            pub.dead_letters.map((j) => [
              h("td", { class: "num", text: j.id }),
              j.target,
              j.alertname || j.fingerprint,
              h("td", { class: "num", text: num(j.attempts) }),
              j.last_error || "–",
              h("button", { type: "button", "data-action": "replay", "data-job": j.id, text: "Replay", onclick: () => replay(j) }),
            ]),
            "No dead letter."
          ),
    ];
    fill("publishing", parts);
  }

  function renderAlerts(alerts) {
    if (!changed("alerts", alerts)) return;
    if (!alerts) {
      fill("alerts", h("p", { class: "muted", text: "Alert intake is off (no alerts section)." }));
      return;
    }
    if (alerts.alerts === null) {
      fill("alerts", h("p", { class: "bad", text: "The store is unavailable." }));
      return;
    }
    fill(
      "alerts",
      h("p", {}, "enrichment mode ", badge(alerts.mode)),
      table(
        ["received", "alert", "status", "labels", "classification", "state", "went to"],
        alerts.alerts.map((a) => {
          const c = a.classification;
          const labels = Object.entries(a.labels || {})
            .filter(([k]) => k !== "alertname")
            .map(([k, v]) => `${k}=${v}`)
            .join(", ");
          return [
            when(a.received_at),
            a.alertname,
            a.status,
            h("span", { class: "labels", text: labels }),
            c ? `${c.severity} · ${c.category} · ${Math.round((c.confidence || 0) * 100)}% (${c.source || "rules"})` : "–",
            a.state,
            (a.targets || []).join(", ") || "–",
          ];
        }),
        "No alert received yet."
      )
    );
  }

  open();
})();
