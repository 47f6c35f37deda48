// fastredis pages: addresses (a ?token= in the page's address goes along with
// every request it makes), GraphQL over HTTP, entry ids, image sniffing, formats.
"use strict";
const FR = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const config = JSON.parse(document.getElementById("fr-config").textContent);

  // path: the server's own, e.g. "/graphql"; behind a proxy at a sub-path (--root-path)
  // the sub-path goes first
  function url(path, params = {}) {
    const u = new URL((config.root || "") + path, location.href);
    for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
    if (token) u.searchParams.set("token", token);
    return u.toString();
  }
  function wsUrl(path, params = {}) {
    const u = new URL(url(path, params));
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }
  const path = (prefix, sid) => prefix + encodeURIComponent(sid);
  function headers(extra = {}) {
    return token ? { ...extra, Authorization: "Bearer " + token } : extra;
  }
  async function gql(query, variables = {}) {
    const r = await fetch(url("/graphql"), {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "application/json" }),
      body: JSON.stringify({ query, variables }),
    });
    const body = await r.json().catch(() => ({ errors: [{ message: `HTTP ${r.status}` }] }));
    if (!r.ok && !body.errors) body.errors = [{ message: body.error || `HTTP ${r.status}` }];
    return body;
  }
  // "1700000000000-3" -> 1700000000000 (the entry's milliseconds since 1970)
  const idMs = (id) => (id ? Number(String(id).split("-")[0]) : NaN);
  function sniff(bytes) {
    const b = new Uint8Array(bytes.slice(0, 8));
    if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
    if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
    return null;
  }
  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function ago(ms) {
    if (!isFinite(ms)) return "–";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 1) return "just now";
    if (s < 60) return s.toFixed(0) + " s ago";
    if (s < 3600) return (s / 60).toFixed(0) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(1) + " d ago";
  }
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  return { config, token, url, wsUrl, path, headers, gql, idMs, sniff, bytes, ago, el };
})();
