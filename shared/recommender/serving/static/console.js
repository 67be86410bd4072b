// Recommender console: sign in, build a basket, see what the model offers and why, inspect the model.
// Plain JavaScript, no framework and no build step. Every value from the API is inserted as text (textContent,
// never innerHTML): product descriptions come from files a retailer uploads and are treated as hostile.
"use strict";

(() => {
  const KEYS = { token: "recommender.token", user: "recommender.user", basket: "recommender.basket" };
  const SEARCH_DELAY_MS = 200;
  const RECS_DELAY_MS = 120;
  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    basket: [],          // [{stock_code, description}]
    model: null,         // the last GET /model answer
    lastRequest: null,   // the body of the last POST /recommendations
    searchAbort: null,
    recsAbort: null,
    searchTimer: 0,
    recsTimer: 0,
    focusRecsAfterRender: false,
  };

  // --- small helpers -----------------------------------------------------------------------------------------

  /** An element with text children only: strings become text nodes, never markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function plural(count, one, many) {
    return `${count.toLocaleString()} ${count === 1 ? one : many}`;
  }

  function sentence(text) {
    const t = String(text || "").trim();
    if (!t) return "";
    const s = t[0].toUpperCase() + t.slice(1);
    return /[.!?]$/.test(s) ? s : `${s}.`;
  }

  /** An http(s) URL from the feed, or null (no javascript:, data: or relative links). */
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function when(iso) {
    if (!iso) return "unknown";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function day(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleDateString();
  }

  function money(value, currency) {
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    try {
      if (currency) return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(value);
    } catch { /* an unknown currency code: plain number below */ }
    return value.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  // --- talking to the API --------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Plain words for an HTTP failure; the API's own `detail` is already a sentence meant for people. */
  function describeFailure(status, data, retryAfter) {
    let detail = "";
    if (data && typeof data.detail === "string") detail = data.detail;
    else if (data && Array.isArray(data.detail)) detail = data.detail.map((d) => d && d.msg).filter(Boolean).join("; ");
    if (status === 401) return sentence(detail || "your session expired");
    if (status === 400 || status === 422) return sentence(`the request was refused: ${detail || "it is not valid"}`);
    if (status === 404) return sentence(detail || "not found");
    if (status === 413) return sentence(`the request is too large for the server${detail ? `: ${detail}` : ""}`);
    if (status === 429) {
      const wait = retryAfter && /^\d+$/.test(retryAfter) ? ` ${plural(Number(retryAfter), "second", "seconds")}` : " a moment";
      return `Too many requests: wait${wait} and try again.`;
    }
    if (status === 503) return sentence(`the service cannot answer right now${detail ? `: ${detail}` : ""}`);
    if (status >= 500) return `The server failed (HTTP ${status}). Try again; if it keeps failing, look at the server's log.`;
    return sentence(detail || `the server answered with HTTP ${status}`);
  }

  async function api(path, { method = "GET", body, form, raw, signal } = {}) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let payload;
    if (form) {
      payload = new URLSearchParams(form);
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    } else if (raw !== undefined) {
      payload = raw;  // a file, sent as it is (the Product feed page)
      headers["Content-Type"] = "application/octet-stream";
    }
    let response;
    try {
      // Relative to the page, so the console also works under an API Gateway stage path.
      response = await fetch(new URL(path, document.baseURI), {
        method, headers, body: payload, signal, cache: "no-store", credentials: "omit",
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "The server cannot be reached. Check that it is running, then try again.");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, describeFailure(response.status, data, response.headers.get("Retry-After")));
    if (data === null || typeof data !== "object") throw new ApiError(response.status, "The server sent an answer this page cannot read.");
    return data;
  }

  // --- errors --------------------------------------------------------------------------------------------------

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  /** Every failed call ends here: a 401 means back to sign-in; aborted calls are no failure. */
  function failed(err) {
    if (err && err.name === "AbortError") return;
    if (err instanceof ApiError && err.status === 401 && state.token) {
      signOut("Your session expired. Please sign in again.");
      return;
    }
    showError(err instanceof ApiError ? err.message : "Something went wrong in this page. Reload it and try again.");
    if (!(err instanceof ApiError)) console.error(err);  // a bug of the page itself, for whoever debugs it
  }

  // --- signing in and out --------------------------------------------------------------------------------------

  function showSignIn(message, bad) {
    $("workspace").hidden = true;
    $("account").hidden = true;
    $("sign-in").hidden = false;
    const note = $("sign-in-message");
    note.textContent = message || "";
    note.className = bad ? "notice" : "hint";
    $("password").value = "";
    $("username").focus();
  }

  function showWorkspace(name) {
    $("sign-in").hidden = true;
    $("account-name").textContent = name;
    $("account").hidden = false;
    $("workspace").hidden = false;
  }

  async function signIn(event) {
    event.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    const note = $("sign-in-message");
    if (!username || !password) {
      note.className = "notice";
      note.textContent = "Enter your username and your password.";
      (username ? $("password") : $("username")).focus();
      return;
    }
    const button = $("sign-in-button");
    button.disabled = true;
    button.textContent = "Signing in…";
    note.className = "hint";
    note.textContent = "Signing in…";
    try {
      const answer = await api("token", { method: "POST", form: { username, password } });
      if (typeof answer.access_token !== "string") throw new ApiError(0, "The server sent no token.");
      state.token = answer.access_token;
      sessionStorage.setItem(KEYS.token, state.token);
      sessionStorage.setItem(KEYS.user, username);
      note.textContent = "";
      $("password").value = "";
      clearError();
      enter(username);
      $("search").focus();
    } catch (err) {
      note.className = "notice";
      // One message whether the user is unknown or the password wrong: the page must not tell which.
      if (err instanceof ApiError && err.status === 401) note.textContent = "Wrong username or password.";
      else note.textContent = err instanceof ApiError ? err.message : "Signing in failed. Try again.";
      $("password").select();
      $("password").focus();
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  }

  function signOut(message) {
    for (const key of Object.values(KEYS)) sessionStorage.removeItem(key);
    if (state.searchAbort) state.searchAbort.abort();
    if (state.recsAbort) state.recsAbort.abort();
    clearTimeout(state.searchTimer);
    clearTimeout(state.recsTimer);
    Object.assign(state, { token: null, basket: [], model: null, lastRequest: null });
    $("search").value = "";
    for (const id of ["search-results", "basket", "recs", "model-facts", "model-counts", "model-evaluation", "model-versions"]) {
      $(id).replaceChildren();
    }
    for (const id of ["search-status", "basket-status", "recs-status", "copy-status", "model-status"]) $(id).textContent = "";
    $("curl-text").value = "";
    clearError();
    document.dispatchEvent(new CustomEvent("console:leave"));
    showSignIn(message, message !== "You are signed out.");
  }

  /** The workspace for a signed-in user: basket kept in this tab, model panel, first recommendations. */
  function enter(username) {
    showWorkspace(username);
    try {
      const kept = JSON.parse(sessionStorage.getItem(KEYS.basket) || "[]");
      state.basket = Array.isArray(kept) ? kept.filter((i) => i && typeof i.stock_code === "string") : [];
    } catch {
      state.basket = [];
    }
    renderBasket();
    loadModel();
    loadAnalytics();
    scheduleRecs(0);
    // The other pages (workplace.js) start from here: the user's role, the rules, the versions.
    document.dispatchEvent(new CustomEvent("console:enter", { detail: { username } }));
  }

  // --- search --------------------------------------------------------------------------------------------------

  function onSearchInput() {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(search, SEARCH_DELAY_MS);
  }

  async function search() {
    const query = $("search").value.trim();
    if (state.searchAbort) state.searchAbort.abort();
    if (!query) {
      $("search-results").replaceChildren();
      $("search-status").textContent = "";
      return;
    }
    const abort = (state.searchAbort = new AbortController());
    try {
      const answer = await api(`items?q=${encodeURIComponent(query)}&limit=10`, { signal: abort.signal });
      renderSearch(answer.items || [], query);
      clearError();
    } catch (err) {
      failed(err);
    }
  }

  function inBasket(code) {
    return state.basket.some((i) => i.stock_code === code);
  }

  function renderSearch(items, query) {
    const list = $("search-results");
    list.replaceChildren(...items.map((item, i) => {
      const id = `found-${i}`;
      const added = inBasket(item.stock_code);
      const button = el("button", { type: "button", class: "small", "aria-describedby": id, disabled: added,
                                    text: added ? "Added" : "Add" });
      button.addEventListener("click", () => {
        addToBasket(item);
        renderSearch(items, query);
        // Keep the keyboard where it was: on the next product still to add, else back in the search box.
        const next = [...list.querySelectorAll("button:not([disabled])")].find((b) => Number(b.dataset.row) > i);
        (next || $("search")).focus();
      });
      button.dataset.row = String(i);
      return el("li", {}, el("span", { class: "what", id },
        el("span", { text: item.description || "(no description)" }), " ", el("span", { class: "code", text: item.stock_code })), button);
    }));
    $("search-status").textContent = items.length ? `${plural(items.length, "product", "products")} found.`
      : `No product matches “${query}”.`;
  }

  // --- basket --------------------------------------------------------------------------------------------------

  function saveBasket() {
    sessionStorage.setItem(KEYS.basket, JSON.stringify(state.basket));
  }

  function addToBasket(item) {
    if (inBasket(item.stock_code)) return;
    state.basket.push({ stock_code: item.stock_code, description: item.description || "" });
    basketChanged(`Added ${item.description || item.stock_code}.`);
  }

  function removeFromBasket(code) {
    state.basket = state.basket.filter((i) => i.stock_code !== code);
    basketChanged("");
  }

  function basketChanged(message) {
    saveBasket();
    renderBasket(message);
    scheduleRecs();
  }

  function renderBasket(message) {
    const list = $("basket");
    list.replaceChildren(...state.basket.map((item, i) => {
      const id = `basket-${i}`;
      const button = el("button", { type: "button", class: "small secondary", "aria-describedby": id, text: "Remove" });
      button.addEventListener("click", () => {
        removeFromBasket(item.stock_code);
        const buttons = list.querySelectorAll("button");
        (buttons[Math.min(i, buttons.length - 1)] || $("search")).focus();
      });
      return el("li", {}, el("span", { class: "what", id },
        el("span", { text: item.description || "(no description)" }), " ", el("span", { class: "code", text: item.stock_code })), button);
    }));
    const count = state.basket.length;
    const summary = count ? `${plural(count, "item", "items")} in the basket.` : "The basket is empty: the recommendations are best-sellers.";
    $("basket-status").textContent = message ? `${message} ${summary}` : summary;
    $("empty-basket").disabled = count === 0;
  }

  async function tryRealBasket() {
    const button = $("real-basket");
    button.setAttribute("aria-busy", "true");
    try {
      const answer = await api("sample_basket");
      state.basket = (answer.items || []).map((i) => ({ stock_code: i.stock_code, description: i.description || "" }));
      const date = answer.date ? ` of ${new Date(answer.date).toLocaleDateString()}` : "";
      basketChanged(`Invoice ${answer.invoice}${date}.`);
      clearError();
    } catch (err) {
      failed(err);
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // --- recommendations -----------------------------------------------------------------------------------------

  function numberOf(id) {
    const input = $(id);
    if (input.value === "") return null;
    const value = Number(input.value);
    return Number.isFinite(value) ? value : null;
  }

  /** The body of POST /recommendations for the basket and the controls; unset controls are left out. */
  function requestBody() {
    const body = { product_list: state.basket.map((i) => i.stock_code), n: numberOf("opt-n") ?? 10, explain: true };
    const category = $("opt-category").value;
    if (category) body.categories = [category];
    const priceMin = numberOf("opt-price-min");
    const priceMax = numberOf("opt-price-max");
    const perCategory = numberOf("opt-per-category");
    const confidence = numberOf("opt-confidence");
    if (priceMin !== null) body.price_min = priceMin;
    if (priceMax !== null) body.price_max = priceMax;
    if (perCategory !== null) body.max_per_category = perCategory;
    if (confidence !== null && confidence > 0) body.min_confidence = confidence / 100;
    return body;
  }

  function scheduleRecs(delay = RECS_DELAY_MS) {
    clearTimeout(state.recsTimer);
    state.recsTimer = setTimeout(fetchRecs, delay);
  }

  async function fetchRecs() {
    if (!state.token) return;
    if (state.recsAbort) state.recsAbort.abort();
    const abort = (state.recsAbort = new AbortController());
    const body = requestBody();
    state.lastRequest = body;
    updateCurl();
    const started = performance.now();
    $("recs").setAttribute("aria-busy", "true");
    try {
      const answer = await api("recommendations", { method: "POST", body, signal: abort.signal });
      renderRecs(answer, body, Math.round(performance.now() - started));
      clearError();
      if (state.model && answer.model_version && answer.model_version !== state.model.model_version) loadModel();
    } catch (err) {
      if (err && err.name === "AbortError") return;
      $("recs").replaceChildren();
      $("recs-status").textContent = "No recommendations: see the message at the top of the page.";
      failed(err);
    } finally {
      if (state.recsAbort === abort) $("recs").removeAttribute("aria-busy");
    }
  }

  const AVAILABILITY = { in_stock: "In stock", out_of_stock: "Out of stock", preorder: "Pre-order", backorder: "Back-order" };

  /** Why an item was picked, in words. */
  function reason(item, answer) {
    const parts = [];
    const rule = window.recommenderConsole && window.recommenderConsole.ruleFor
      ? window.recommenderConsole.ruleFor(item, state.basket.map((b) => b.stock_code)) : null;
    if (item.source === "pinned") parts.push(rule || "Pinned here by a merchandising rule.");
    else if (item.source === "new" && item.reason) parts.push(sentence(item.reason));
    else if (item.source === "popular") {
      parts.push(answer.fallback ? "A best-seller: the model has nothing to go on for this basket."
        : "A best-seller, added because the model's own picks ran out.");
    } else if (Array.isArray(item.because) && item.because.length) {
      // Shares are exact parts of the score; a basket item may weigh an item down (a negative share), and then
      // the others' shares pass 100%: percentages are shown only when they read as parts of a whole.
      const together = (b) => (typeof b.baskets === "number" ? `bought together in ${plural(b.baskets, "basket", "baskets")}` : "bought together");
      const name = (b) => b.description || b.stock_code;
      const share = (b) => (typeof b.share === "number" ? b.share : 0);
      const ordered = [...item.because].sort((a, b) => share(b) - share(a));
      const up = ordered.filter((b) => share(b) > 0);
      const down = ordered.filter((b) => share(b) < 0);
      const parts_of_whole = !down.length;
      const shown = up.slice(0, 2).map((b) => `with ${name(b)}: ${together(b)}${parts_of_whole ? ` (${Math.round(share(b) * 100)}% of the score)` : ""}`);
      const more = up.length > 2 ? `; and ${plural(up.length - 2, "other basket item", "other basket items")}` : "";
      // A negative part says what it is: the pair is bought together less than the two are bought at all.
      const rarely = (b) => (typeof b.baskets === "number" ? `: ${plural(b.baskets, "basket", "baskets")}` : "");
      const against = down.slice(0, 1).map((b) => `; less likely because it is rarely bought with ${name(b)}${rarely(b)}`).join("");
      if (shown.length) parts.push(sentence(shown.join("; ") + more + against));
    }
    if (typeof item.boost === "number" && item.boost !== 1) {
      parts.push(item.source !== "pinned" && rule ? rule
        : item.boost > 1 ? `Boosted ×${item.boost} by a rule.` : `Buried ×${item.boost} by a rule.`);
    }
    return parts.join(" ");
  }

  function recItem(item, rank, answer) {
    const descId = `rec-${rank}`;
    const image = safeUrl(item.image_link);
    const link = safeUrl(item.link);
    const name = item.description || item.title || "(no description)";
    const title = link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", text: name })
      : el("span", { text: name });

    const meta = el("div", { class: "meta" });
    const price = money(item.price, item.currency);
    if (price) meta.append(el("span", { class: "price", text: price }));
    if (item.availability) {
      meta.append(el("span", { class: item.availability === "out_of_stock" ? "availability avail-out" : "availability",
                               text: AVAILABILITY[item.availability] || String(item.availability) }));
    }
    if (item.category) meta.append(el("span", { class: "category", text: String(item.category) }));
    if (item.brand) meta.append(el("span", { class: "brand", text: String(item.brand) }));
    if (item.source) meta.append(el("span", { class: `badge ${["model", "popular", "pinned", "new"].includes(item.source) ? item.source : ""}`, text: String(item.source) }));

    let confidence;
    if (typeof item.confidence === "number") {
      const pct = Math.round(item.confidence * 100);
      confidence = el("div", { class: "confidence" },
        el("meter", { min: 0, max: 1, value: item.confidence, "aria-label": `Confidence ${pct}%` }),
        el("span", { text: `${pct}% confidence` }));
    } else {
      confidence = el("div", { class: "confidence", text: `score ${typeof item.score === "number" ? item.score.toFixed(3) : "?"}` });
    }
    const why = reason(item, answer);
    const add = el("button", { type: "button", class: "small", "aria-describedby": descId, text: "Add" });
    add.disabled = inBasket(item.stock_code);
    add.addEventListener("click", () => {
      state.focusRecsAfterRender = true;
      addToBasket({ stock_code: item.stock_code, description: item.description || "" });
    });
    return el("li", { class: "rec" },
      el("span", { class: "rank", text: String(rank) }),
      image ? el("img", { class: "thumb", src: image, alt: "", loading: "lazy", referrerpolicy: "no-referrer" })
        : el("span", { class: "thumb none", "aria-hidden": "true" }),
      el("div", { class: "body" },
        el("div", { id: descId }, el("span", { class: "desc" }, title), " ", el("span", { class: "code", text: item.stock_code })),
        meta, confidence, why ? el("p", { class: "reason", text: why }) : null),
      add);
  }

  /** The reasons of the answer shown, written again (the rules behind pins and boosts are known later). */
  function reasonsAgain() {
    const answer = state.lastAnswer;
    if (!answer || !Array.isArray(answer.items)) return;
    const rows = $("recs").querySelectorAll(".rec");
    answer.items.forEach((item, i) => {
      const text = rows[i] && rows[i].querySelector(".reason");
      if (text) text.textContent = reason(item, answer);
    });
  }

  function renderRecs(answer, body, elapsed) {
    state.lastAnswer = answer;
    const items = Array.isArray(answer.items) ? answer.items : [];
    const list = $("recs");
    list.replaceChildren(...items.map((item, i) => recItem(item, i + 1, answer)));
    list.classList.toggle("no-images", !items.some((item) => safeUrl(item.image_link)));
    list.dataset.elapsedMs = String(elapsed);
    const notes = [];
    if (!items.length) notes.push("No item passes these filters.");
    else notes.push(`${plural(items.length, "item", "items")} in ${elapsed} ms from model ${answer.model_version}.`);
    if (answer.fallback && body.product_list.length) {
      const unknown = Array.isArray(answer.unknown_codes) ? answer.unknown_codes.length : 0;
      notes.push(unknown >= body.product_list.length ? "Nothing in the basket is known to the model: these are best-sellers."
        : "The model learned nothing about what goes with these products: these are best-sellers.");
    }
    if (answer.exhausted) notes.push(`Fewer than the ${body.n} asked for: no more items pass the filters.`);
    if (Array.isArray(answer.unknown_codes) && answer.unknown_codes.length) {
      notes.push(`Not in the model, ignored: ${answer.unknown_codes.join(", ")}.`);
    }
    if (Array.isArray(answer.warnings)) notes.push(...answer.warnings.map((w) => `${w}.`));
    $("recs-status").textContent = notes.join(" ");
    if (state.focusRecsAfterRender) {
      state.focusRecsAfterRender = false;
      (list.querySelector("button:not([disabled])") || $("search")).focus();
    }
  }

  // --- copy as curl ------------------------------------------------------------------------------------------

  function shellQuote(text) {
    return `'${String(text).replace(/'/g, "'\\''")}'`;
  }

  function curlCommand() {
    const url = new URL("recommendations", document.baseURI).href;
    return [`curl -s -X POST ${shellQuote(url)}`,
            `-H ${shellQuote(`Authorization: Bearer ${state.token || ""}`)}`,
            "-H 'Content-Type: application/json'",
            `-d ${shellQuote(JSON.stringify(state.lastRequest || requestBody()))}`].join(" \\\n     ");
  }

  function updateCurl() {
    $("curl-text").value = curlCommand();
  }

  async function copyCurl() {
    const command = curlCommand();
    $("curl-text").value = command;
    try {
      await navigator.clipboard.writeText(command);
      $("copy-status").textContent = "Copied: paste it into a terminal (it holds your token).";
    } catch {
      $("curl-details").open = true;
      $("curl-text").select();
      $("copy-status").textContent = "The browser refused to copy: the command is selected below, copy it with your keyboard.";
    }
  }

  // --- model panel ---------------------------------------------------------------------------------------------

  function facts(list, rows) {
    list.replaceChildren(...rows.filter(([, value]) => value !== null && value !== undefined && value !== "")
      .flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: String(value) })]));
  }

  function num(value) {
    return typeof value === "number" ? value.toLocaleString() : null;
  }

  async function loadModel() {
    $("model-status").textContent = "Loading…";
    try {
      const info = await api("model");
      state.model = info;
      renderModel(info);
      $("model-status").textContent = "";
    } catch (err) {
      $("model-status").textContent = "The model's details could not be loaded.";
      failed(err);
    }
  }

  function renderModel(info) {
    const source = info.source || {};
    facts($("model-facts"), [
      ["Version served", info.model_version],
      ["Trained", when(info.created_at)],
      ["Items", num(info.item_count)],
      ["Purchases", info.period && info.period.first ? `${day(info.period.first)} to ${day(info.period.last)}` : null],
      ["Confidence", info.calibrated ? "calibrated on held-out baskets" : "not calibrated (a stand-in from the score)"],
      ["Training file", source.file ? `${source.file}${source.bytes ? ` (${(source.bytes / 1e6).toFixed(1)} MB)` : ""}` : null],
      ["Product feed", info.feed_version || "none"],
      ["Rules", info.rules_version || "none"],
    ]);
    const counts = info.counts || {};
    const dropped = counts.dropped && typeof counts.dropped === "object"
      ? Object.entries(counts.dropped).filter(([, n]) => n).map(([why, n]) => `${num(n)} ${why}`).join(", ") || "none" : null;
    const baskets = num(counts.baskets);
    facts($("model-counts"), [
      ["Rows read", num(counts.rows_read)],
      ["Rows kept", num(counts.rows_kept)],
      ["Rows dropped", dropped],
      ["Baskets", baskets && counts.guest_baskets !== undefined ? `${baskets} (${num(counts.guest_baskets)} by guests)` : baskets],
      ["Customers", num(counts.customers)],
      ["Products", num(counts.items)],
    ]);
    renderEvaluation(info.evaluation);
    renderCategories(info.categories);
    $("model-versions").replaceChildren(...(info.versions || []).map((v) => {
      const marks = [v.served && "served", v.active && "active", v.staged && "staged", !v.complete && "incomplete"].filter(Boolean);
      const details = [when(v.created_at), typeof v.items === "number" ? plural(v.items, "item", "items") : null, v.source_file]
        .filter(Boolean).join(" · ");
      return el("li", {}, el("code", { text: v.version }), marks.length ? el("span", { class: "mark", text: ` (${marks.join(", ")})` }) : null,
        el("div", { class: "hint", text: details }));
    }));
  }

  function renderEvaluation(evaluation) {
    const box = $("model-evaluation");
    if (!evaluation || typeof evaluation !== "object") {
      box.replaceChildren(el("p", { class: "hint", text: "This model carries no evaluation figures." }));
      return;
    }
    const k = evaluation.k || 10;
    const fmt = (x) => (typeof x === "number" ? `${(x * 100).toLocaleString(undefined, { maximumFractionDigits: 1 })}%` : "–");
    const row = (name, figures) => el("tr", {}, el("th", { scope: "row", text: name }),
      el("td", { class: "num", text: fmt(figures && figures.hr) }), el("td", { class: "num", text: fmt(figures && figures.mrr) }));
    const about = [evaluation.protocol, evaluation.cutoff ? `baskets from ${day(evaluation.cutoff)} on` : null,
      typeof evaluation.holdout_baskets === "number" ? `${plural(evaluation.holdout_baskets, "held-out basket", "held-out baskets")}` : null,
      typeof evaluation.cases === "number" ? plural(evaluation.cases, "case", "cases") : null].filter(Boolean).join(", ");
    box.replaceChildren(
      el("table", { class: "figures" },
        el("caption", { class: "hint", text: about }),
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "method" }),
          el("th", { scope: "col" }, el("abbr", { title: `HR@${k}: share of held-out baskets whose bought item was in the top ${k}`, text: `Bought item in the top ${k}` })),
          el("th", { scope: "col" }, el("abbr", { title: `MRR@${k}: the mean of 1/rank of the bought item (0 beyond ${k})`, text: "Rank score" })))),
        el("tbody", {}, row("model", evaluation.model), row("best-sellers", evaluation.popularity))),
      words(evaluation, k));
  }

  /** The held-out figure in a sentence: "Found the bought item in the top 10 for 32.9% of held-out baskets". */
  function words(evaluation, k) {
    const hr = evaluation.model && evaluation.model.hr;
    const pop = evaluation.popularity && evaluation.popularity.hr;
    if (typeof hr !== "number") return null;
    const ratio = typeof pop === "number" && pop > 0 ? hr / pop : null;
    const better = ratio ? `, ${ratio.toLocaleString(undefined, { maximumFractionDigits: ratio < 10 ? 1 : 0 })}x as often as best-sellers` : "";
    return el("p", { class: "quality", text: `Found the bought item in the top ${k} for ${(hr * 100).toLocaleString(undefined, { maximumFractionDigits: 1 })}% of held-out baskets${better}.` });
  }

  function renderCategories(categories) {
    const select = $("opt-category");
    const current = select.value;
    const names = Array.isArray(categories) ? categories.filter((c) => typeof c === "string") : [];
    select.replaceChildren(el("option", { value: "", text: "All categories" }),
      ...names.map((name) => el("option", { value: name, text: name })));
    select.value = names.includes(current) ? current : "";
  }

  // --- start ---------------------------------------------------------------------------------------------------

  // --- analytics -----------------------------------------------------------------------------------------------

  const ARM_COLOURS = ["#2a6fd6", "#e07b00", "#1b7d32", "#8e44ad", "#c62828"];

  function pct(value) {
    return typeof value === "number" ? `${(value * 100).toFixed(2)}%` : "–";
  }

  function amount(value) {
    return typeof value === "number" ? value.toLocaleString(undefined, { maximumFractionDigits: 2, minimumFractionDigits: 2 }) : "–";
  }

  async function loadAnalytics() {
    $("analytics-status").textContent = "Loading…";
    try {
      renderAnalytics(await api("analytics"));
    } catch (err) {
      $("analytics-status").textContent = "The analytics could not be loaded.";
      failed(err);
    }
  }

  function renderAnalytics(data) {
    const headline = $("analytics-headline");
    if (!data.computed_at) {
      $("analytics-status").textContent = data.message || "No report yet.";
      headline.hidden = true;
      $("analytics-figures").hidden = true;
      $("analytics-experiment").hidden = true;
      $("analytics-pairs").replaceChildren();
      return;
    }
    $("analytics-status").textContent = `As of the last report, ${when(data.computed_at)} (make report refreshes it); ` +
      `purchases attributed within ${data.window_hours} hours of an answer that showed the item.`;
    const rows = [["Last 7 days", data.shop.last_7_days], ["Last 30 days", data.shop.last_30_days]];
    $("analytics-figures").querySelector("tbody").replaceChildren(...rows.filter(([, f]) => f).map(([name, f]) =>
      el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: f.sessions.toLocaleString() }),
        el("td", { text: pct(f.click_through) }), el("td", { text: pct(f.conversion_rate) }),
        el("td", { text: amount(f.revenue_per_session) }), el("td", { text: amount(f.revenue) }))));
    $("analytics-figures").hidden = false;
    const exp = data.experiment;
    if (exp) {
      const broken = exp.sample_ratio && exp.sample_ratio.broken;
      headline.textContent = `${exp.name}: ${exp.headline}`;
      headline.className = broken ? "headline broken" : "headline";
      headline.hidden = false;
      $("analytics-experiment-title").textContent =
        `Experiment ${exp.name} (${exp.running ? "running" : "stopped"}): revenue per session by day, 95% interval`;
      const srm = $("analytics-srm");
      const notes = (exp.warnings || []).slice();
      if (broken) {
        notes.unshift(`Broken split: sessions ${JSON.stringify(exp.sample_ratio.observed)} against the configured shares ` +
          `(p = ${exp.sample_ratio.p_value.toPrecision(2)}).`);
      }
      srm.hidden = !notes.length;
      srm.textContent = notes.join(" ");
      $("analytics-chart").replaceChildren(chart(exp, "revenue_per_session"));
      $("analytics-experiment").hidden = false;
    } else {
      headline.hidden = true;
      $("analytics-experiment").hidden = true;
    }
    $("analytics-pairs").replaceChildren(...(data.pairs || []).map((p) =>
      el("li", {}, el("span", {}, el("code", { text: p.held }), " → ", el("code", { text: p.clicked })),
        el("span", { class: "hint", text: plural(p.sessions, "session", "sessions") }))));
    if (!(data.pairs || []).length) $("analytics-pairs").replaceChildren(el("li", { class: "hint", text: "No clicks recorded yet." }));
  }

  /** An SVG line chart of a metric per day per arm, each with its 95% interval as a band. */
  function chart(exp, metric) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = (tag, attrs) => {
      const node = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      return node;
    };
    const W = 760, H = 240, L = 56, R = 110, T = 12, B = 28;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metric.replaceAll("_", " ")} per day and arm` });
    const days = exp.days || [];
    const arms = exp.arms.map((a) => a.name);
    let lo = Infinity, hi = -Infinity;
    for (const d of days) for (const a of arms) {
      const f = d.arms[a];
      if (!f || typeof f[metric] !== "number") continue;
      lo = Math.min(lo, f[`${metric}_low`] ?? f[metric]);
      hi = Math.max(hi, f[`${metric}_high`] ?? f[metric]);
    }
    if (!days.length || !isFinite(lo)) {
      const t = svg("text", { x: L, y: H / 2 });
      t.textContent = "No sessions in the experiment yet.";
      root.append(t);
      return root;
    }
    if (hi === lo) { hi += 1; lo = Math.max(0, lo - 1); }
    const x = (i) => L + (days.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (days.length - 1));
    const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#aab3bd" }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
      t.textContent = amount(v);
      root.append(t);
    }
    days.forEach((d, i) => {
      if (days.length > 10 && i % Math.ceil(days.length / 10)) return;
      const t = svg("text", { x: x(i), y: H - 8, "text-anchor": "middle" });
      t.textContent = d.day.slice(5);
      root.append(t);
    });
    arms.forEach((a, k) => {
      const colour = ARM_COLOURS[k % ARM_COLOURS.length];
      const pts = days.map((d, i) => [i, d.arms[a]]).filter(([, f]) => f && typeof f[metric] === "number");
      if (!pts.length) return;
      const upper = pts.map(([i, f]) => `${x(i)},${y(f[`${metric}_high`] ?? f[metric])}`);
      const lower = pts.map(([i, f]) => `${x(i)},${y(f[`${metric}_low`] ?? f[metric])}`).reverse();
      root.append(svg("polygon", { points: upper.concat(lower).join(" "), fill: colour, "fill-opacity": 0.15 }));
      root.append(svg("polyline", { points: pts.map(([i, f]) => `${x(i)},${y(f[metric])}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
      for (const [i, f] of pts) root.append(svg("circle", { cx: x(i), cy: y(f[metric]), r: 3, fill: colour }));
      const label = svg("text", { x: W - R + 8, y: T + 14 + 16 * k, fill: colour, class: "arm-label" });
      label.textContent = a;
      root.append(label);
    });
    return root;
  }

  async function resume() {
    const token = sessionStorage.getItem(KEYS.token);
    if (!token) {
      showSignIn("", false);
      return;
    }
    state.token = token;
    try {
      const me = await api("users/me");
      enter(me.username || sessionStorage.getItem(KEYS.user) || "");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) signOut("Your session expired. Please sign in again.");
      else {
        enter(sessionStorage.getItem(KEYS.user) || "");
        failed(err);
      }
    }
  }

  function start() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("You are signed out."));
    $("search").addEventListener("input", onSearchInput);
    $("search").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        clearTimeout(state.searchTimer);
        search();
      }
    });
    $("real-basket").addEventListener("click", tryRealBasket);
    $("empty-basket").addEventListener("click", () => {
      state.basket = [];
      basketChanged("Emptied.");
      $("search").focus();
    });
    $("controls").addEventListener("input", () => scheduleRecs());
    $("controls").addEventListener("change", () => scheduleRecs());
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      scheduleRecs(0);
    });
    $("copy-curl").addEventListener("click", copyCurl);
    // On a phone the filters fold away, so the first recommendation shows without scrolling past them.
    $("filters").open = !window.matchMedia("(max-width: 720px)").matches;
    $("model-refresh").addEventListener("click", loadModel);
    // What the other pages (workplace.js, loaded after this script) share with the try-out panel.
    window.recommenderConsole = {
      api, el, failed, clearError, showError, ApiError, sentence, plural, when, day,
      refreshTryIt: () => { if (state.token) scheduleRecs(0); },
      reasonsAgain,
    };
    $("analytics-refresh").addEventListener("click", loadAnalytics);
    resume();
  }

  start();
})();
