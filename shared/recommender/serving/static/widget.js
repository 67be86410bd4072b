/* The recommender's shop widget: a strip of recommended products in every element marked data-recommender, and the
   shopper's views, clicks, add-to-carts and purchases sent to POST /events. Plain JavaScript, no dependencies.
   Nothing here may break the shop's page: every entry point catches its errors, and a failing API leaves the strip
   empty. Docs: docs/shop.md. */
(function () {
  "use strict";
  // Whatever goes wrong in here stays in here: the shop's page never sees an error of the widget.
  try { main(); } catch (e) { try { console.warn("recommender: " + e); } catch (ignored) { /* no console */ } }

  function main() {
    var w = window, doc = document, ss;
    var script = doc.currentScript || doc.querySelector("script[src*='widget.js'][data-key]");
    if (!script || (w.recommender && w.recommender.version)) return;  // loaded twice: the first one serves
    var api = script.src.replace(/\/widget\.js([?#].*)?$/, "");
    var key = script.getAttribute("data-key") || "";
    var scriptUser = script.getAttribute("data-user");
    var BATCH = 50, MAX_QUEUE = 500, SESSION = "recommender.session", PENDING = "recommender.pending";
    var CLICKED = "recommender.clicked";
    try { ss = w.sessionStorage; } catch (e) { ss = null; }

    function get(k) { try { return ss ? ss.getItem(k) : null; } catch (e) { return null; } }
    function put(k, v) { try { if (ss) v === null ? ss.removeItem(k) : ss.setItem(k, v); } catch (e) { /* full */ } }
    function parse(text, fallback) { try { return text ? JSON.parse(text) : fallback; } catch (e) { return fallback; } }
    function warn(message) { try { console.warn("recommender: " + message); } catch (e) { /* no console */ } }
    // Random ids from crypto.getRandomValues, which (unlike randomUUID) also exists on plain-http pages.
    function randomId() {
      var bytes = new Uint8Array(16);
      w.crypto.getRandomValues(bytes);
      return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    }
    var session = get(SESSION);
    if (!session || !/^[0-9a-f]{32}$/.test(session)) { session = randomId(); put(SESSION, session); }

    function headers() { return { "Content-Type": "application/json", "X-API-Key": key }; }

    // ---------------------------------------------------------------------------------------------- events
    // Events wait in `queue` a moment so that several go in one request; a batch that fails (network, 5xx, 429) goes
    // back to the front of the queue and is tried again later and later (1 s doubling to 60 s). Unsent events are
    // kept in sessionStorage when the page is left and sent from the shop's next page: event ids make a re-send
    // harmless.
    var queue = parse(get(PENDING), []), timer = 0, backoff = 0, inFlight = 0;
    put(PENDING, null);
    if (!Array.isArray(queue)) queue = [];

    function schedule(ms) {
      if (timer) {
        if (ms > 0 || backoff) return;
        clearTimeout(timer);
      }
      timer = setTimeout(flush, Math.max(ms, backoff));
    }

    function flush() {
      timer = 0;
      if (!queue.length || inFlight) return;
      var batch = queue.splice(0, BATCH), body = JSON.stringify({ events: batch });
      inFlight = 1;
      // keepalive lets the request outlive the page (a click that navigates away); browsers cap such bodies at 64 KB.
      fetch(api + "/events", {
        method: "POST", headers: headers(), body: body, keepalive: body.length < 60000, credentials: "omit"
      }).then(function (response) {
        if (response.status >= 500 || response.status === 429 || response.status === 408) throw response;
        backoff = 0;
        if (!response.ok) warn("events refused (HTTP " + response.status + ")");
        else response.json().then(function (answer) {
          (answer.results || []).forEach(function (r) {
            if (r.status === "refused") warn("event refused: " + r.reason);
          });
        }, function () {});
      }).catch(function (failed) {
        queue = batch.concat(queue).slice(0, MAX_QUEUE);
        backoff = Math.min(backoff ? backoff * 2 : 1000, 60000);
        // A 429 or 503 says how long to wait (Retry-After, in seconds): never sooner than that.
        var after = failed && failed.headers ? Number(failed.headers.get("Retry-After")) : 0;
        if (after > 0) backoff = Math.max(backoff, Math.min(after * 1000, 300000));
      }).then(function () {
        inFlight = 0;
        if (queue.length) schedule(0);
      });
    }

    function send(type, items, extra) {
      var event = { event_id: randomId(), type: type, ts: new Date().toISOString(), session_id: session, items: items };
      var user = (extra && extra.user_id) || scriptUser;
      if (user) event.user_id = String(user);
      ["recommendation_id", "value", "currency"].forEach(function (name) {
        if (extra && extra[name] !== undefined && extra[name] !== null) event[name] = extra[name];
      });
      queue.push(event);
      if (queue.length > MAX_QUEUE) queue.shift();
      // A click or a purchase usually leaves the page: sent at once. Views and add-to-carts wait a second for company.
      schedule(type === "click" || type === "purchase" ? 0 : 1000);
      return event.event_id;
    }

    function leaving() {
      if (!backoff && !inFlight) flush();
      put(PENDING, queue.length ? JSON.stringify(queue) : null);
    }
    w.addEventListener("pagehide", leaving);
    doc.addEventListener("visibilitychange", function () { if (doc.visibilityState === "hidden") leaving(); });

    // Which answer led to a product: the recommendation id of its last click, for the add-to-cart and the purchase.
    function clicked() { return parse(get(CLICKED), {}) || {}; }
    function remember(code, rid) {
      var seen = clicked();
      delete seen[code];
      seen[code] = rid;
      var codes = Object.keys(seen);
      if (codes.length > 50) delete seen[codes[0]];
      put(CLICKED, JSON.stringify(seen));
    }

    function track(type, data) {
      try {
        if (type !== "add_to_cart" && type !== "purchase") {
          warn("track(type): type must be \"add_to_cart\" or \"purchase\", not " + JSON.stringify(type));
          return null;
        }
        data = data || {};
        var items = (data.items || []).map(function (item) {
          if (typeof item !== "object") item = { stock_code: item };
          var out = { stock_code: String(item.stock_code) };
          if (item.quantity !== undefined) out.quantity = Number(item.quantity);
          if (item.price !== undefined) out.price = Number(item.price);
          return out;
        });
        if (!items.length) {
          warn("track(\"" + type + "\"): give the products, {items: [{stock_code, quantity, price}, ...]}");
          return null;
        }
        var extra = { value: data.value, currency: data.currency, user_id: data.user_id };
        var seen = clicked();
        extra.recommendation_id = data.recommendation_id || items.map(function (i) { return seen[i.stock_code]; })
          .filter(Boolean)[0];
        return send(type, items, extra);
      } catch (e) {
        warn("track failed: " + e);
        return null;
      }
    }

    // ---------------------------------------------------------------------------------------------- the strips
    var CSS = ":host{all:initial;display:block;font-family:var(--rec-font-family,system-ui,-apple-system,'Segoe UI'," +
      "Roboto,sans-serif);font-size:var(--rec-font-size,15px);line-height:1.35;color:var(--rec-color,#1f2328)}" +
      ":host([hidden]){display:none}" +
      "section{background:var(--rec-background,transparent);padding:var(--rec-padding,0)}" +
      "h2{margin:0 0 .6em;font-size:var(--rec-title-size,1.2em);font-weight:var(--rec-title-weight,600);" +
      "color:var(--rec-title-color,inherit)}" +
      "ul{list-style:none;margin:0;padding:0 0 4px;display:grid;grid-auto-flow:column;" +
      "grid-auto-columns:minmax(var(--rec-item-width,150px),1fr);gap:var(--rec-gap,16px);overflow-x:auto;" +
      "scroll-snap-type:x mandatory}" +
      "li{margin:0;padding:0;scroll-snap-align:start;min-width:0}" +
      "a,.item{display:flex;flex-direction:column;gap:.35em;height:100%;box-sizing:border-box;" +
      "padding:var(--rec-item-padding,8px);border:var(--rec-border,1px solid #d0d7de);" +
      "border-radius:var(--rec-radius,8px);background:var(--rec-item-background,#fff);color:inherit;" +
      "text-decoration:none}" +
      "a:hover .title{text-decoration:underline}" +
      "a:focus-visible{outline:var(--rec-focus-outline,3px solid #0969da);outline-offset:2px}" +
      "img{display:block;width:100%;height:auto;aspect-ratio:1;object-fit:var(--rec-image-fit,cover);" +
      "border-radius:var(--rec-image-radius,6px);background:#f6f8fa}" +
      ".title{font-weight:500;overflow-wrap:anywhere}" +
      ".price{color:var(--rec-price-color,#1a7f37);font-weight:600}";
    var OPTIONS = {
      exclude: "list", categories: "list", "exclude-categories": "list", "price-min": "number",
      "price-max": "number", "max-price-ratio": "number", "min-confidence": "number", "max-per-category": "number"
    };
    var count = 0;

    function list(text) {
      return (text || "").split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    }
    function safeUrl(text) {
      try {
        var url = new URL(text, doc.baseURI);
        return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
      } catch (e) { return null; }
    }
    function price(item) {
      if (typeof item.price !== "number") return "";
      try {
        return new Intl.NumberFormat(doc.documentElement.lang || undefined,
          { style: "currency", currency: item.currency || "USD" }).format(item.price);
      } catch (e) { return item.price.toFixed(2) + (item.currency ? " " + item.currency : ""); }
    }
    function el(tag, cls, text) {
      var node = doc.createElement(tag);
      if (cls) node.className = cls;
      if (text) node.textContent = text;
      return node;
    }

    // A constructed stylesheet where the browser has them: a shop's Content-Security-Policy without 'unsafe-inline'
    // for styles blocks a <style> element (in a shadow root too), never a sheet built through the CSSOM.
    var sheet = null;
    function style(root) {
      try {
        if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); }
        root.adoptedStyleSheets = [sheet];
      } catch (e) {
        root.appendChild(el("style", "", CSS));
      }
    }

    function request(host) {
      var n = parseInt(host.getAttribute("data-n") || "4", 10);
      // The shopper, as the events name them: a running experiment answers with their arm.
      var body = { product_list: list(host.getAttribute("data-basket")), n: n > 0 && n <= 100 ? n : 4, session_id: session };
      var user = host.getAttribute("data-user") || scriptUser;
      if (user && user.length <= 128 && !/[\x00-\x1f\x7f]/.test(user)) body.user_id = String(user);
      Object.keys(OPTIONS).forEach(function (name) {
        var raw = host.getAttribute("data-" + name);
        if (raw === null || raw === "") return;
        var value = OPTIONS[name] === "list" ? list(raw) : Number(raw);
        if (OPTIONS[name] === "number" && !isFinite(value)) return warn("data-" + name + " is not a number: " + raw);
        body[name.replace(/-/g, "_")] = value;
      });
      return body;
    }

    function render(host) {
      host.setAttribute("data-state", "loading");
      return fetch(api + "/recommendations", {
        method: "POST", headers: headers(), body: JSON.stringify(request(host)), credentials: "omit"
      }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      }).then(function (answer) {
        draw(host, answer);
      }).catch(function (e) {
        host.setAttribute("data-state", "failed");
        warn("no recommendations: " + (e && e.message ? e.message : e));
      });
    }

    function draw(host, answer) {
      var items = (answer.items || []).filter(function (item) { return item && item.stock_code; });
      var rid = answer.recommendation_id;
      var root = host.shadowRoot || host.attachShadow({ mode: "open" });
      root.textContent = "";
      if (host._recObserver) host._recObserver.disconnect();
      if (!items.length) { host.setAttribute("data-state", "empty"); return; }
      var section = el("section"), heading = el("h2", "", host.getAttribute("data-title") || "You may also like");
      heading.id = "recommender-title-" + ++count;
      heading.setAttribute("part", "title");
      section.setAttribute("aria-labelledby", heading.id);
      var ul = el("ul");
      ul.setAttribute("role", "list");  // list-style:none makes Safari drop the list role otherwise
      ul.setAttribute("part", "list");
      items.forEach(function (item) {
        var title = item.title || item.description || item.stock_code, link = safeUrl(item.link);
        var li = el("li"), box = el(link ? "a" : "div", link ? "" : "item");
        li.setAttribute("part", "item");
        box.setAttribute("data-code", item.stock_code);
        var image = safeUrl(item.image_link);
        if (image) {
          var img = el("img");
          img.src = image;
          img.alt = title;
          img.loading = "lazy";
          img.width = img.height = 300;
          img.setAttribute("part", "image");
          box.appendChild(img);
        }
        var name = el("span", "title", title), cost = el("span", "price", price(item));
        // The image's alt text already names the product: its title is read once, not twice, by screen readers.
        if (image) name.setAttribute("aria-hidden", "true");
        box.appendChild(name);
        if (cost.textContent) box.appendChild(cost);
        if (link) {
          box.href = link;
          var clicked = function (e) {
            if (e.type === "auxclick" && e.button !== 1) return;  // a middle click opens it too; a right click does not
            try {
              if (rid) remember(item.stock_code, rid);
              var clickedItem = { stock_code: item.stock_code };
              if (typeof item.price === "number") clickedItem.price = item.price;
              send("click", [clickedItem], { recommendation_id: rid, user_id: host.getAttribute("data-user") });
            } catch (err) { /* never in the shop's way */ }
          };
          box.addEventListener("click", clicked);
          box.addEventListener("auxclick", clicked);
        }
        li.appendChild(box);
        ul.appendChild(li);
      });
      section.appendChild(heading);
      section.appendChild(ul);
      style(root);
      root.appendChild(section);
      host.setAttribute("data-state", "ready");
      try { performance.mark("recommender:rendered"); } catch (e) { /* old browser */ }
      // One view per answer, when at least half of the strip has been on screen.
      var shown = items.map(function (item) { return { stock_code: item.stock_code }; });
      if (!w.IntersectionObserver) return;
      var observer = new IntersectionObserver(function (entries) {
        if (!entries.some(function (e) { return e.isIntersecting && e.intersectionRatio >= 0.5; })) return;
        observer.disconnect();
        send("view", shown, { recommendation_id: rid, user_id: host.getAttribute("data-user") });
      }, { threshold: 0.5 });
      host._recObserver = observer;
      observer.observe(host);
    }

    function refresh(target) {
      try {
        var hosts = target ? [target] : doc.querySelectorAll("[data-recommender]");
        return Promise.all(Array.prototype.map.call(hosts, render)).then(function () {});
      } catch (e) {
        warn("refresh failed: " + e);
        return Promise.resolve();
      }
    }

    // Calls made before this script arrived (window.recommender = {q: [["track", type, data], ...]}) are replayed.
    var early = w.recommender && Array.isArray(w.recommender.q) ? w.recommender.q : [];
    w.recommender = { version: 1, track: track, refresh: refresh, session: session };
    early.forEach(function (call) { if (call && call[0] === "track") track(call[1], call[2]); });
    if (queue.length) schedule(1000);
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", function () { refresh(); });
    else refresh();
  }
})();
