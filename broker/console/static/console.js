// Operators' console (docs/console.md). Plain JavaScript, no dependencies, no build step.
//
// It renders only what the broker sends it: the tail (/v1/tail, SSE), a message's trail
// (/v1/console/trail), /readyz, the audit checkpoint and proofs. What content an operator may see is
// decided by the server; this page never asks for a body and never puts content in a URL. All DOM is
// built with textContent (the CSP forbids inline script and requires Trusted Types: there is no
// HTML sink here to need one).
"use strict";

(() => {
  const MAX_ROWS = 500; // message rows kept; the oldest (and its content) is dropped beyond
  const RECENT = 200; // default `since`: the last RECENT records under the latest checkpoint
  const SIG_PREFIX = "\u2014 "; // C2SP signed note: em dash and a space

  const S = {
    session: null,
    es: null,
    paused: false,
    last: -1, // index of the last tail event taken
    since: "",
    kind: "",
    originator: "",
    backoff: 1000,
    rows: new Map(), // key (message id, or "#index" for an event of no message) -> row
    held: new Map(), // key -> {rank, policy, caveats} of content this page holds
    trail: null, // {id, from} of the trail shown
    trailTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    const body = await r.json().catch(() => null);
    if (!r.ok && !(body && url === "/readyz")) {
      const what = body && body.title ? `${body.title}: ${body.detail || ""}` : r.statusText;
      throw new Error(`${r.status} ${what}`);
    }
    return body;
  }

  // -- markings and banners ---------------------------------------------------------------------

  function rankOf(label) {
    if (!label || !S.session) return null;
    const r = S.session.classifications.indexOf(label.classification);
    return r < 0 ? null : r;
  }

  function chip(marking, label) {
    const r = rankOf(label);
    const c = el("span", `chip rank-${r === null ? "none" : r}`, marking || "UNLABELLED");
    c.title = marking || "UNLABELLED";
    return c;
  }

  // The highest display marking of the content this page holds (rows with content and the trail
  // shown), in the form(s) of the policies at that rank, with every caveat held. Redacted rows hold no
  // content and do not raise it; filtering rows out of view does not lower it (Clear does).
  function bannerOf(items) {
    let top = -1;
    const forms = new Set();
    const caveats = new Set();
    for (const it of items) {
      for (const c of it.caveats) caveats.add(c);
      if (it.rank > top) {
        top = it.rank;
        forms.clear();
      }
      if (it.rank === top) forms.add(it.policy);
    }
    if (top < 0) return { rank: null, text: "UNCLASSIFIED" };
    const text = ["NATO", "EU"]
      .filter((p) => forms.has(p))
      .map((p) => S.session.markings[p][top])
      .join(" \u00b7 ");
    const cav = [...caveats].sort();
    return { rank: top, text: cav.length ? `${text} // ${cav.join(" ")}` : text };
  }

  function updateBanners() {
    const b = bannerOf(S.held.values());
    for (const id of ["banner-top", "banner-bottom"]) {
      const n = $(id);
      n.textContent = b.text;
      n.className = `banner rank-${b.rank === null ? "none" : b.rank}`;
      n.dataset.rank = b.rank === null ? "none" : String(b.rank);
    }
  }

  function hold(key, label) {
    const rank = rankOf(label);
    if (rank === null) return;
    S.held.set(key, { rank, policy: label.policy, caveats: label.caveats || [] });
  }

  // -- the stream ---------------------------------------------------------------------------------

  function setConn(state, text) {
    const c = $("conn");
    c.className = `conn ${state}`;
    c.textContent = text;
  }

  function closeStream() {
    if (S.es) {
      S.es.close();
      S.es = null;
    }
  }

  function connect() {
    closeStream();
    const q = new URLSearchParams({ follow: "true" });
    const since = S.last >= 0 ? String(S.last + 1) : S.since;
    if (since) q.set("since", since);
    if (S.kind) q.set("kind", S.kind);
    if (S.originator) q.set("originator", S.originator);
    const es = new EventSource(`/v1/tail?${q.toString()}`);
    S.es = es;
    setConn("down", "connecting…");
    es.onopen = () => {
      if (S.es !== es) return;
      S.backoff = 1000;
      setConn("live", "live");
    };
    for (const name of S.session.events) es.addEventListener(name, onTailEvent);
    es.onerror = () => {
      if (S.es !== es) return;
      es.close();
      S.es = null;
      if (S.paused) return;
      setConn("down", `reconnecting in ${Math.round(S.backoff / 1000)} s`);
      setTimeout(() => {
        if (!S.paused && !S.es) connect();
      }, S.backoff);
      S.backoff = Math.min(S.backoff * 2, 15000);
    };
  }

  function onTailEvent(msg) {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch (_e) {
      return;
    }
    if (typeof ev.index !== "number" || ev.index <= S.last) return; // a replay after a reconnection
    S.last = ev.index;
    const key = ev.message_id || `#${ev.index}`;
    let row = S.rows.get(key);
    if (!row) row = newRow(key, ev);
    row.events.push(ev);
    if (!row.label && ev.label) {
      row.label = ev.label;
      row.marking = ev.marking;
    }
    if ("content" in ev && !row.hasContent) {
      row.hasContent = true;
      row.content = ev.content;
      hold(key, ev.label);
    } else if (ev.redacted) {
      row.redacted = true;
    }
    renderRow(row);
    filterRow(row);
    updateBanners();
    updateCounts();
    if (S.trail && ev.message_id === S.trail.id) refreshTrailSoon();
  }

  function newRow(key, ev) {
    const art = el("article", "msg");
    art.dataset.key = key;
    if (ev.message_id) art.dataset.id = ev.message_id;
    const head = el("button", "row");
    head.type = "button";
    head.setAttribute("aria-expanded", "false");
    const detail = el("div", "detail");
    detail.hidden = true;
    art.append(head, detail);
    const rows = $("rows");
    rows.insertBefore(art, rows.firstChild);
    const row = { key, id: ev.message_id || null, art, head, detail, events: [], label: null, marking: null };
    S.rows.set(key, row);
    while (S.rows.size > MAX_ROWS) {
      const [oldKey, old] = S.rows.entries().next().value;
      old.art.remove();
      S.rows.delete(oldKey);
      S.held.delete(oldKey);
    }
    return row;
  }

  function summaryOf(row) {
    const first = row.events[0];
    if (!row.id) {
      const who = first.actor ? ` by ${first.actor}` : "";
      return `${first.event}${who}${first.reason ? `: ${first.reason}` : ""}`;
    }
    const n = {};
    for (const e of row.events) n[e.event] = (n[e.event] || 0) + 1;
    const order = ["accepted", "rejected", "released", "withheld", "delivered", "dead-lettered"];
    const parts = order.filter((k) => n[k]).map((k) => (n[k] > 1 || k !== "accepted" ? `${k} ${n[k]}` : k));
    return `${parts.join(" \u00b7 ")} \u2014 ${row.id}`;
  }

  function hhmmss(t) {
    return typeof t === "string" && t.length >= 23 ? t.substring(11, 23) : String(t);
  }

  function renderRow(row) {
    const first = row.events[0];
    clear(row.head);
    row.head.append(
      chip(row.marking || first.marking, row.label),
      el("span", "mono", hhmmss(first.time)),
      el("span", "kind", first.kind || first.event),
      el("span", "orig", first.originator || ""),
      el("span", "summary", summaryOf(row)),
    );
    row.head.title = first.time;
    clear(row.detail);
    if (row.id) row.detail.append(el("div", "mono", `message ${row.id}`));
    const list = el("ul", "events");
    for (const e of row.events) {
      const li = el("li");
      li.dataset.event = e.event;
      li.dataset.actor = e.actor || "";
      const prove = el("button", "link prove-btn", "prove");
      prove.type = "button";
      prove.dataset.index = String(e.index);
      const time = el("span", "mono", hhmmss(e.time));
      time.title = e.time;
      const why = e.reason ? `${e.event === "withheld" ? "rule" : "reason"}: ${e.reason}` : "";
      li.append(
        el("span", "mono", `#${e.index}`),
        time,
        el("span", `ev ev-${e.event}`, e.event),
        el("span", "who", [e.actor, why].filter(Boolean).join(" \u00b7 ")),
        chip(e.marking, e.label),
        prove,
      );
      list.append(li);
    }
    row.detail.append(list);
    row.detail.append(contentNode(row));
    if (row.id) {
      const t = el("button", "link trail-btn", "Trail");
      t.type = "button";
      t.dataset.id = row.id;
      row.detail.append(t);
    }
  }

  function contentNode(row) {
    if (row.hasContent) return el("pre", "content", JSON.stringify(row.content, null, 2));
    if (!row.id) return el("span", "hint", "no message content: an event of the broker itself");
    if (row.events.every((e) => e.event === "rejected")) {
      return el("span", "redacted", "no content: a rejected message is never stored");
    }
    return el("span", "redacted", "redacted \u2014 above your clearance or not releasable to you");
  }

  // -- client-side filters ------------------------------------------------------------------------

  function shownEvents() {
    const on = new Set();
    for (const cb of document.querySelectorAll("#f-events input")) if (cb.checked) on.add(cb.value);
    return on;
  }

  // An event shows when its kind of event is ticked and, with an organisation chosen, that
  // organisation originated the message or is the event's actor (released to, withheld from…); a
  // row shows when one of its events does.
  function filterRow(row, on = shownEvents(), org = $("f-org").value) {
    let visible = 0;
    row.detail.querySelectorAll("li").forEach((li, i) => {
      const e = row.events[i];
      const show = on.has(e.event) && (!org || e.originator === org || e.actor === org);
      li.classList.toggle("filtered", !show);
      if (show) visible++;
    });
    row.art.classList.toggle("filtered", visible === 0);
  }

  function filterAll() {
    const on = shownEvents();
    const org = $("f-org").value;
    for (const row of S.rows.values()) filterRow(row, on, org);
    updateCounts();
  }

  function updateCounts() {
    let events = 0;
    let shown = 0;
    for (const r of S.rows.values()) {
      events += r.events.length;
      if (!r.art.classList.contains("filtered")) shown++;
    }
    const last = S.last >= 0 ? ` \u00b7 last #${S.last}` : "";
    $("counts").textContent = `${shown} of ${S.rows.size} rows \u00b7 ${events} events${last}`;
  }

  function clearRows() {
    clear($("rows"));
    S.rows.clear();
    S.held.clear();
    clearTrail();
    updateBanners();
    updateCounts();
  }

  // -- a message's trail --------------------------------------------------------------------------

  function clearTrail() {
    S.trail = null;
    S.held.delete("trail");
    const t = $("trail");
    clear(t);
    t.append(el("p", "hint", "Select a message and choose \u201cTrail\u201d to see its whole story."));
  }

  function refreshTrailSoon() {
    if (S.trailTimer) return;
    S.trailTimer = setTimeout(() => {
      S.trailTimer = null;
      if (S.trail) showTrail(S.trail.id, S.trail.from);
    }, 300);
  }

  function ms(v) {
    if (v === null || v === undefined) return "";
    return v < 1000 ? `+${v.toFixed(1)} ms` : `+${(v / 1000).toFixed(2)} s`;
  }

  async function showTrail(id, from) {
    const q = new URLSearchParams({ id });
    if (from !== null && from !== undefined) q.set("from", String(from));
    const t = $("trail");
    let doc;
    try {
      doc = await getJSON(`/v1/console/trail?${q.toString()}`);
    } catch (e) {
      clear(t);
      t.append(el("p", "fail", `trail not available: ${e.message}`));
      return;
    }
    S.trail = { id, from };
    clear(t);
    const h = el("h2", "", "Trail ");
    h.append(chip(doc.marking || "UNLABELLED", doc.label || null));
    t.append(h, el("div", "mono", doc.message_id));
    if (!doc.found) {
      t.append(el("p", "hint", "no record of this message in the log read"));
    }
    const dl = el("dl", "kv");
    const add = (k, v) => dl.append(el("dt", "", k), el("dd", "", v));
    if (doc.kind) add("kind", doc.kind);
    if (doc.originator) add("originator", doc.originator);
    if (doc.accepted) {
      const a = doc.accepted;
      add("accepted", `#${a.index} ${a.time} from ${a.actor || "?"}`);
    }
    for (const r of doc.rejected) add("rejected", `#${r.index} ${r.time}: ${r.reason || ""} (${r.actor || "no identity"})`);
    t.append(dl);
    if (doc.organisations.length) {
      const table = el("table", "grid trail-orgs");
      const hr = el("tr");
      for (const c of ["organisation", "outcome", "rule", "steps"]) hr.append(el("th", "", c));
      table.append(hr);
      for (const o of doc.organisations) {
        const tr = el("tr");
        tr.dataset.org = o.organisation;
        tr.dataset.outcome = o.outcome;
        const steps = el("td", "steps");
        for (const s of o.steps) {
          steps.append(el("div", "mono", `${s.event} #${s.index} ${hhmmss(s.time)} ${ms(s.latency_ms)}`));
        }
        tr.append(
          el("td", "org", o.organisation),
          el("td", `outcome outcome-${o.outcome}`, o.outcome),
          el("td", "rule", o.rule || ""),
          steps,
        );
        table.append(tr);
      }
      t.append(table);
    }
    if ("content" in doc) {
      t.append(el("pre", "content", JSON.stringify(doc.content, null, 2)));
      hold("trail", doc.label);
    } else {
      S.held.delete("trail");
      if (doc.found) {
        const why = doc.accepted ? "redacted \u2014 above your clearance or not releasable to you" : "no content: never stored";
        t.append(el("span", "redacted", why));
      }
    }
    const stop = { complete: "complete", "end-of-log": "to the end of the log", limit: "scan limit reached", time: "time limit reached" };
    t.append(el("p", "hint", `${doc.scanned} records read from #${doc.from} (${stop[doc.stopped] || doc.stopped})`));
    const again = el("button", "link", "Refresh");
    again.type = "button";
    again.addEventListener("click", () => showTrail(id, from));
    t.append(again);
    updateBanners();
  }

  // -- health ---------------------------------------------------------------------------------------

  function table(cols, rows, cls) {
    const t = el("table", `grid ${cls || ""}`);
    const hr = el("tr");
    for (const c of cols) hr.append(el("th", "", c));
    t.append(hr);
    for (const r of rows) {
      const tr = el("tr");
      for (const cell of r) tr.append(cell instanceof Node ? wrapTd(cell) : el("td", typeof cell === "number" ? "num" : "", cell ?? ""));
      t.append(tr);
    }
    return t;
  }

  function wrapTd(node) {
    const td = el("td");
    td.append(node);
    return td;
  }

  function yesNo(v, yes, no) {
    if (v === true) return el("span", "ok", yes);
    if (v === false) return el("span", "fail", no);
    return el("span", "unknown", "unknown");
  }

  async function loadHealth() {
    const box = $("health");
    let doc;
    try {
      doc = await getJSON("/readyz");
    } catch (e) {
      clear(box);
      box.append(el("p", "fail", `/readyz: ${e.message}`));
      return;
    }
    clear(box);
    $("health-at").textContent = `last read ${new Date().toISOString().substring(11, 19)} UTC`;
    box.append(el("h3", "", "Ready"));
    const ready = yesNo(doc.ready, "ready: bus connected, streams present", "NOT READY");
    ready.id = "health-ready";
    box.append(ready);
    const gw = doc.gateway || {};
    box.append(el("h3", "", "Gateway processes"));
    box.append(el("p", "", `answering: pid ${gw.pid}${gw.worker !== null && gw.worker !== undefined ? `, worker ${gw.worker}` : ""}; reporting metrics: ${(gw.processes || []).join(", ")}`));
    const n = doc.nats || {};
    box.append(el("h3", "", "NATS"));
    box.append(
      el(
        "p",
        "",
        n.connected
          ? `connected to ${n.server_name || "?"} (${n.connected_url || "?"}, nats-server ${n.version || "?"}${n.cluster ? `, cluster ${n.cluster}` : ""}); known: ${(n.known_servers || []).join(", ")}`
          : "not connected",
      ),
    );
    const streams = (doc.streams || []).map((s) => [
      s.name,
      s.messages,
      s.bytes,
      s.last_seq,
      s.leader || "",
      (s.replicas || []).map((p) => `${p.name}${p.current ? "" : " (behind)"}${p.offline ? " (offline)" : ""}`).join(", ") || "\u2014",
    ]);
    box.append(table(["stream", "messages", "bytes", "last seq", "leader", "replicas"], streams, "health-streams"));
    box.append(el("h3", "", "Consumers"));
    const d = doc.dispatcher;
    box.append(el("p", "", d ? `dispatcher lag: ${d.lag} (${d.num_pending} not yet fetched, ${d.num_ack_pending} in progress)` : "dispatcher lag: unknown"));
    const cons = (doc.consumers || []).map((c) => [c.role, `${c.stream}/${c.consumer}`, c.num_pending ?? "?", c.num_ack_pending ?? "?", c.num_redelivered ?? "?", c.lag ?? "?"]);
    box.append(table(["role", "consumer", "pending", "in progress", "redelivered", "backlog"], cons, "health-consumers"));
    box.append(el("h3", "", "Organisations"));
    const orgs = Object.keys(doc.native || {}).sort();
    const orgTable = table(
      ["organisation", "delivery backlog", "dead letters", "native system"],
      orgs.map((o) => [o, doc.backlog ? doc.backlog[o] : null, doc.dead_letters ? doc.dead_letters[o] : null, yesNo(doc.native[o].reachable, "reachable", "unreachable")]),
      "health-orgs",
    );
    const trs = orgTable.querySelectorAll("tr");
    orgs.forEach((o, i) => {
      trs[i + 1].dataset.org = o;
      trs[i + 1].dataset.native = String(doc.native[o].reachable);
    });
    box.append(orgTable);
    const a = doc.audit || {};
    box.append(el("h3", "", "Audit writer"));
    box.append(el("p", "", `queue depth ${a.queue_depth ?? "unknown"}, tree size ${a.tree_size ?? "unknown"}`));
    if ((doc.errors || []).length) {
      box.append(el("h3", "", "Not answered"));
      const ul = el("ul");
      for (const e of doc.errors) ul.append(el("li", "fail", e));
      box.append(ul);
    }
  }

  // -- audit: checkpoint and in-browser proof ---------------------------------------------------

  const enc = new TextEncoder();

  function b64(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function hex(bytes) {
    return bytes ? [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("") : "(none)";
  }

  function cat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function same(a, b) {
    return !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (record) => sha256(cat(new Uint8Array([0]), record));
  const nodeHash = (l, r) => sha256(cat(new Uint8Array([1]), l, r));

  // RFC 9162 section 2.1.3.2: the root an inclusion path leads to from leaf `index` of a tree of `size`
  async function rootFromPath(index, size, leaf, path) {
    if (!(index < size)) return null;
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of path) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  // broker/audit/note.py: three body lines, a blank line, then "— <key name> <base64(key id || sig)>"
  function parseNote(note) {
    const sep = note.lastIndexOf("\n\n");
    if (sep < 0 || !note.endsWith("\n")) throw new Error("the checkpoint is not a signed note");
    const body = note.substring(0, sep + 1);
    const lines = body.substring(0, body.length - 1).split("\n");
    if (lines.length !== 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("the checkpoint body is not origin, size, root");
    const sigs = note
      .substring(sep + 2, note.length - 1)
      .split("\n")
      .map((line) => {
        if (!line.startsWith(SIG_PREFIX)) throw new Error("a signature line does not start with an em dash");
        const [name, data] = line.substring(SIG_PREFIX.length).split(" ");
        const raw = b64(data);
        return { name, keyId: raw.slice(0, 4), sig: raw.slice(4) };
      });
    return { body, origin: lines[0], size: Number(lines[1]), root: b64(lines[2]), sigs };
  }

  // The broker's key as a WebCrypto key, or null where this browser has no Ed25519 (NotSupportedError);
  // a key it has the algorithm for but refuses is a failure, not a skip.
  async function ed25519Key(pub) {
    try {
      return await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      if (e && e.name === "NotSupportedError") return null;
      throw e;
    }
  }

  async function loadCheckpoint() {
    const dl = $("checkpoint");
    if (S.session.audit.signed === false) {
      // nothing signed when the page loaded: ask the session again rather than meet a 404
      try {
        S.session = await getJSON("/v1/console/session");
      } catch (_e) {
        // kept as it was
      }
      if (S.session.audit.signed === false) {
        clear(dl);
        dl.append(el("dt", "", "checkpoint"), el("dd", "hint", "none signed yet"));
        return null;
      }
    }
    try {
      const cp = await getJSON("/v1/audit/checkpoint");
      clear(dl);
      for (const [k, v] of [["origin", cp.origin], ["tree size", cp.size], ["root (base64)", cp.root]]) {
        dl.append(el("dt", "", k), el("dd", "mono", v));
      }
      dl.dataset.size = String(cp.size);
      $("checkpoint-note").textContent = cp.note;
      return cp;
    } catch (e) {
      clear(dl);
      dl.append(el("dt", "", "checkpoint"), el("dd", "fail", e.message));
      return null;
    }
  }

  async function prove(index) {
    const list = $("proof-checks");
    const verdict = $("proof-verdict");
    clear(list);
    verdict.className = "verdict";
    verdict.textContent = `checking record #${index}\u2026`;
    let failed = 0;
    let skipped = 0;
    const check = (ok, text) => {
      const state = ok === null ? "skip" : ok ? "ok" : "fail";
      if (state === "fail") failed++;
      if (state === "skip") skipped++;
      const li = el("li", state, `${state === "ok" ? "\u2713" : state === "fail" ? "\u2717" : "\u2013"} ${text}`);
      li.dataset.check = state;
      list.append(li);
    };
    try {
      const proof = await getJSON(`/v1/audit/proof?index=${index}`);
      const rr = await fetch(`/v1/console/record?index=${index}`, { cache: "no-store", credentials: "same-origin" });
      if (!rr.ok) throw new Error(`record #${index}: ${rr.status}`);
      const record = new Uint8Array(await rr.arrayBuffer());
      const leaf = await leafHash(record);
      check(same(leaf, b64(proof.leaf_hash)), `record #${index}: SHA-256(0x00 \u2016 its ${record.length} bytes) = ${hex(leaf)}, the leaf hash the proof names`);
      const note = parseNote(proof.checkpoint);
      check(note.origin === S.session.audit.origin, `the checkpoint is for this log: origin \u201c${note.origin}\u201d`);
      check(note.size === proof.size && index < note.size, `record #${index} lies in the checkpoint's tree of ${note.size} records`);
      const path = proof.proof.map(b64);
      const root = await rootFromPath(index, note.size, leaf, path);
      check(same(root, note.root), `the leaf and the ${path.length} hashes of the inclusion path (RFC 9162) give the root ${hex(root)}; the checkpoint's root is ${hex(note.root)}`);
      const known = S.session.audit.keys;
      let signed = false;
      for (const sig of note.sigs) {
        const key = known.find((k) => k.name === sig.name);
        if (!key) continue;
        const pub = b64(key.public_key);
        const keyId = (await sha256(cat(enc.encode(sig.name), new Uint8Array([0x0a, 0x01]), pub))).slice(0, 4);
        check(same(keyId, sig.keyId), `key ID ${hex(sig.keyId)} is that of ${sig.name}'s Ed25519 key (from the policy)`);
        const k = await ed25519Key(pub);
        if (k === null) {
          check(null, "this browser's WebCrypto has no Ed25519: the checkpoint's signature was not checked here");
          signed = true;
          continue;
        }
        const ok = sig.sig.length === 64 && (await crypto.subtle.verify({ name: "Ed25519" }, k, sig.sig, enc.encode(note.body)));
        check(ok, `the Ed25519 signature by ${sig.name} over the checkpoint's three lines verifies (WebCrypto)`);
        signed = true;
      }
      if (!signed) check(false, "no signature on the checkpoint is by a key the policy names");
    } catch (e) {
      check(false, `could not check: ${e.message}`);
    }
    if (failed) {
      verdict.className = "verdict fail";
      verdict.textContent = `FAILED: record #${index} is not proven in the log (${failed} check${failed > 1 ? "s" : ""} failed)`;
    } else {
      verdict.className = "verdict ok";
      verdict.textContent = skipped
        ? `Record #${index} is in the signed tree (inclusion verified; signature not checked in this browser)`
        : `VERIFIED: record #${index} is in the log under the signed checkpoint`;
    }
    verdict.dataset.result = failed ? "fail" : "ok";
    loadCheckpoint();
  }

  // -- wiring ---------------------------------------------------------------------------------------

  let healthTimer = null;
  let auditTimer = null;

  function selectTab(name) {
    for (const b of document.querySelectorAll(".tabs button")) {
      const on = b.dataset.tab === name;
      b.setAttribute("aria-selected", on ? "true" : "false");
      $(`tab-${b.dataset.tab}`).hidden = !on;
    }
    for (const t of [healthTimer, auditTimer]) if (t) clearInterval(t);
    healthTimer = null;
    auditTimer = null;
    if (name === "health") {
      loadHealth();
      healthTimer = setInterval(loadHealth, 5000);
    }
    if (name === "audit") {
      loadCheckpoint();
      auditTimer = setInterval(loadCheckpoint, 10000);
    }
  }

  function option(select, value) {
    const o = el("option", "", value);
    o.value = value;
    select.append(o);
  }

  async function start() {
    try {
      S.session = await getJSON("/v1/console/session");
    } catch (e) {
      $("who").textContent = `not signed in: ${e.message}`;
      return;
    }
    const s = S.session;
    $("who").textContent = `${s.operator} (${s.organisation}), cleared ${s.clearance_marking}`;
    for (const k of s.kinds) option($("f-kind"), k);
    for (const o of s.organisations) {
      option($("f-originator"), o);
      option($("f-org"), o);
    }
    for (const ev of s.events) {
      const l = el("label");
      const cb = el("input");
      cb.type = "checkbox";
      cb.value = ev;
      cb.checked = true;
      cb.addEventListener("change", filterAll);
      l.append(cb, document.createTextNode(` ${ev}`));
      $("f-events").append(l);
    }
    $("f-org").addEventListener("change", filterAll);
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => selectTab(b.dataset.tab));
    $("server-filters").addEventListener("submit", (e) => {
      e.preventDefault();
      S.since = $("f-since").value.trim();
      S.kind = $("f-kind").value;
      S.originator = $("f-originator").value;
      S.last = -1;
      S.paused = false;
      $("pause").textContent = "Pause";
      clearRows();
      connect();
    });
    $("pause").addEventListener("click", () => {
      S.paused = !S.paused;
      $("pause").textContent = S.paused ? "Resume" : "Pause";
      if (S.paused) {
        closeStream();
        setConn("paused", "paused");
      } else {
        connect();
      }
    });
    $("clear").addEventListener("click", clearRows);
    $("rows").addEventListener("click", (e) => {
      const target = e.target instanceof Element ? e.target : null;
      if (!target) return;
      const p = target.closest(".prove-btn");
      if (p) {
        $("prove-index").value = p.dataset.index;
        selectTab("audit");
        prove(Number(p.dataset.index));
        return;
      }
      const t = target.closest(".trail-btn");
      if (t) {
        const row = S.rows.get(t.dataset.id);
        const first = row && row.events.find((x) => x.event === "accepted" || x.event === "rejected");
        showTrail(t.dataset.id, first ? first.index : null);
        return;
      }
      const head = target.closest(".row");
      if (head) {
        const detail = head.nextElementSibling;
        detail.hidden = !detail.hidden;
        head.setAttribute("aria-expanded", detail.hidden ? "false" : "true");
      }
    });
    $("prove-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("prove-index").value.trim();
      if (/^[0-9]+$/.test(v)) prove(Number(v));
    });
    const cp = await loadCheckpoint();
    S.since = cp ? String(Math.max(0, cp.size - RECENT)) : "0";
    $("f-since").value = S.since;
    updateBanners();
    updateCounts();
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
