// Recommender console, the merchandiser's pages: the role beside the name, page links, Rules (a form and its
// text, checked as typed, previewed on real baskets, published, rolled back) and Versions. One section per page;
// everything from the API is inserted as text, as in console.js, whose helpers this uses.
"use strict";

(() => {
  const CHECK_DELAY_MS = 300;
  const $ = (id) => document.getElementById(id);
  const C = () => window.recommenderConsole;

  const me = { role: null, rights: [] };
  const may = (right) => me.rights.includes(right);

  // --- pages

  const PAGES = {
    try: () => [$("workspace")],
    rules: () => [$("page-rules")],
    feed: () => [$("page-feed")],
    versions: () => [$("page-versions")],
    analytics: () => [$("workspace")],  // the try-out panel's Analytics card (console.js), brought into view
  };

  function show(page, focus) {
    if (!PAGES[page]) page = "try";
    const shown = new Set(PAGES[page]());
    for (const parts of Object.values(PAGES)) for (const part of parts()) part.hidden = !shown.has(part);
    for (const link of document.querySelectorAll("#pages a")) {
      if (link.dataset.page === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (page === "rules") loadRules();
    if (page === "versions") loadVersions();
    if (page === "feed") loadFeed();
    if (page === "try" || page === "analytics") C().refreshTryIt();
    if (page === "analytics") {
      const card = $("analytics-title");
      if (card) {
        card.setAttribute("tabindex", "-1");
        card.scrollIntoView();
        if (focus) card.focus();
      }
      return;
    }
    if (focus) {
      const title = { rules: "rules-title", feed: "feed-title", versions: "versions-title" }[page];
      if (title) $(title).focus();
    }
  }

  function route(focus) {
    if (!me.role) return;
    show(location.hash.replace("#", "") || "try", focus);
  }

  let session = 0;  // which sign-in an answer belongs to: one arriving after a sign-out is dropped

  async function enter() {
    const mine = ++session;
    try {
      const who = await C().api("users/me");
      if (mine !== session) return;
      me.role = who.role;
      me.rights = Array.isArray(who.rights) ? who.rights : [];
    } catch (err) {
      C().failed(err);
      return;
    }
    $("account-role").textContent = me.role;
    C().ruleFor = ruleFor;
    await loadRulesInForce();
    if (mine === session) C().reasonsAgain();  // reasons name the rules now
    $("pages").hidden = false;
    // What the role may not change is not offered at all.
    for (const node of document.querySelectorAll("#page-rules .editing")) node.hidden = !may("rules");
    $("versions-rollback").hidden = !may("promote");
    $("versions-feed-rollback").hidden = !may("feed");
    $("versions-rules-rollback").hidden = !may("rules");
    $("rules-readonly").hidden = may("rules");
    $("feed-form").hidden = !may("feed");
    $("feed-readonly").hidden = may("feed");
    route(false);
  }

  function leave() {
    session += 1;
    rulesInForce = null;
    Object.assign(me, { role: null, rights: [] });
    $("account-role").textContent = "";
    $("pages").hidden = true;
    for (const id of ["page-rules", "page-feed", "page-versions"]) $(id).hidden = true;
    $("feed-summary").replaceChildren();
    $("feed-file").value = "";
    draft = emptyDraft();
    $("rules-preview-result").replaceChildren();
    for (const id of ["rules-outcome", "rules-check", "rules-status", "versions-status", "versions-feed-outcome",
      "versions-rules-outcome"]) $(id).textContent = "";
  }

  // --- rules: the draft and its form

  const KINDS = ["code", "category", "brand"];
  const emptyDraft = () => ({ block: { codes: [], categories: [], brands: [] }, do_not_pair: [], pin: [], boost: [], bury: [] });
  let draft = emptyDraft();
  let checkTimer = 0;
  let checkAbort = null;

  const list = (text) => String(text || "").split(",").map((t) => t.trim()).filter(Boolean);
  const selectorKind = (sel) => KINDS.find((k) => sel && sel[k] !== undefined) || "code";
  const selectorText = (sel) => [].concat(sel ? sel[selectorKind(sel)] || [] : []).join(", ");
  /** A UTC time as the datetime-local input shows it (the browser's own time zone). */
  function localInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  const utc = (local) => (local ? new Date(local).toISOString().replace(".000Z", "Z") : undefined);

  /** One labelled field of a rule row; place names it as make rules does ("pin[0].position"). */
  function field(label, place, value, { type = "text", options, width } = {}) {
    const { el } = C();
    const id = `f-${place.replace(/[^a-z0-9]/gi, "-")}`;
    let input;
    if (options) {
      input = el("select", { id, "data-place": place });
      for (const [v, text] of options) input.append(el("option", { value: v, text }));
      input.value = value;
    } else {
      input = el("input", { id, type, "data-place": place, autocomplete: "off", spellcheck: "false" });
      input.value = value === undefined || value === null ? "" : String(value);
      if (type === "number") input.setAttribute("step", "any");
    }
    if (!may("rules")) input.disabled = true;
    return el("div", { class: `field${width ? ` ${width}` : ""}` }, el("label", { for: id, text: label }), input);
  }

  function windowFields(kind, i, entry) {
    return [
      field("From", `${kind}[${i}].start`, localInput(entry.start), { type: "datetime-local" }),
      field("Until", `${kind}[${i}].end`, localInput(entry.end), { type: "datetime-local" }),
    ];
  }

  function selectorFields(kind, i, side, sel, label) {
    const place = side ? `${kind}[${i}].${side}` : `${kind}[${i}]`;
    return [
      field(`${label}: by`, `${place}.kind`, selectorKind(sel), {
        options: [["code", "product code"], ["category", "category"], ["brand", "brand"]], width: "narrow",
      }),
      field(label, `${place}.${selectorKind(sel)}`, selectorText(sel)),
    ];
  }

  function ruleRow(kind, i, entry) {
    const { el } = C();
    let fields;
    if (kind === "pin") {
      fields = [
        field("When the basket holds (code)", `pin[${i}].basket.code`, selectorText(entry.basket)),
        field("Show (code)", `pin[${i}].item.code`, [].concat(entry.item && entry.item.code || []).join("")),
        field("At position", `pin[${i}].position`, entry.position ?? 1, { type: "number", width: "narrow" }),
      ];
    } else if (kind === "do_not_pair") {
      fields = [...selectorFields(kind, i, "basket", entry.basket, "When the basket holds"),
        ...selectorFields(kind, i, "item", entry.item, "Never recommend")];
    } else {
      fields = [...selectorFields(kind, i, "", entry, kind === "boost" ? "Raise" : "Lower"),
        field("Factor", `${kind}[${i}].factor`, entry.factor ?? (kind === "boost" ? 1.5 : 0.5), { type: "number", width: "narrow" })];
    }
    const remove = el("button", { type: "button", class: "small editing", "data-remove": `${kind}:${i}`,
      "aria-label": `Remove ${kind.replace(/_/g, " ")} ${i + 1}`, text: "Remove" });
    remove.hidden = !may("rules");
    return el("div", { class: "rule-row", "data-index": i },
      el("span", { class: "rule-number", text: `${i + 1}.` }), ...fields, ...windowFields(kind, i, entry), remove,
      el("p", { class: "field-error", "data-error-for": `${kind}[${i}]`, role: "alert" }));
  }

  function renderForm() {
    for (const box of document.querySelectorAll("#rules-form .rule-rows")) {
      const kind = box.dataset.kind;
      box.replaceChildren(...draft[kind].map((entry, i) => ruleRow(kind, i, entry)));
    }
    $("block-codes").value = draft.block.codes.join(", ");
    $("block-categories").value = draft.block.categories.join(", ");
    $("block-brands").value = draft.block.brands.join(", ");
    for (const id of ["block-codes", "block-categories", "block-brands"]) $(id).disabled = !may("rules");
    $("rules-text").readOnly = !may("rules");
  }

  /** The draft from the form's fields (the form is the draft's view; this reads it back). */
  function readForm() {
    const value = (place) => {
      const node = document.querySelector(`#rules-form [data-place="${CSS.escape(place)}"]`);
      return node ? node.value : "";
    };
    const selector = (place) => {
      const kind = value(`${place}.kind`) || "code";
      const node = document.querySelector(`#rules-form [data-place^="${CSS.escape(place)}."]:not(select)`);
      return { [kind]: list(node ? node.value : "") };
    };
    const withWindow = (kind, i, entry) => {
      const start = utc(value(`${kind}[${i}].start`));
      const end = utc(value(`${kind}[${i}].end`));
      return { ...entry, ...(start ? { start } : {}), ...(end ? { end } : {}) };
    };
    const next = emptyDraft();
    next.block = { codes: list($("block-codes").value), categories: list($("block-categories").value), brands: list($("block-brands").value) };
    draft.pin.forEach((_, i) => {
      const position = Number(value(`pin[${i}].position`));
      next.pin.push(withWindow("pin", i, {
        basket: { code: list(value(`pin[${i}].basket.code`)) },
        item: { code: value(`pin[${i}].item.code`).trim() },
        position: value(`pin[${i}].position`) === "" ? 1 : position,
      }));
    });
    draft.do_not_pair.forEach((_, i) => next.do_not_pair.push(withWindow("do_not_pair", i, {
      basket: selector(`do_not_pair[${i}].basket`), item: selector(`do_not_pair[${i}].item`),
    })));
    for (const kind of ["boost", "bury"]) {
      draft[kind].forEach((_, i) => {
        const sel = selector(`${kind}[${i}]`);
        next[kind].push(withWindow(kind, i, { ...sel, factor: Number(value(`${kind}[${i}].factor`)) }));
      });
    }
    return next;
  }

  /** The document a rules file holds: empty parts left out, so the text stays short. */
  function documentOf(d) {
    const out = {};
    const block = Object.fromEntries(Object.entries(d.block).filter(([, v]) => v.length));
    if (Object.keys(block).length) out.block = block;
    for (const kind of ["pin", "do_not_pair", "boost", "bury"]) if (d[kind].length) out[kind] = d[kind];
    return out;
  }

  function fromDocument(doc) {
    const d = emptyDraft();
    const block = (doc && doc.block) || {};
    for (const key of ["codes", "categories", "brands"]) d.block[key] = [].concat(block[key] || []).map(String);
    for (const kind of ["pin", "do_not_pair", "boost", "bury"]) d[kind] = Array.isArray(doc && doc[kind]) ? doc[kind] : [];
    return d;
  }

  function formChanged(event) {
    const target = event.target;
    draft = readForm();
    // A changed "by" (code, category, brand) re-renders its row with the matching field.
    if (target && target.tagName === "SELECT") {
      renderForm();
      const again = document.querySelector(`#rules-form [data-place="${CSS.escape(target.dataset.place)}"]`);
      if (again) again.focus();
    }
    if (target && target.id !== "rules-text") showText();
    scheduleCheck();
  }

  // --- rules as text: YAML written here, read by the server with make rules' reader

  const YAML_WORDS = /^(?:y|n|yes|no|true|false|on|off|null|~)$/i;

  /** Plain when it reads back as the same text (make rules keeps 22423 as typed), else quoted as JSON quotes. */
  function yamlScalar(v) {
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    const s = String(v ?? "");
    const plain = /^[A-Za-z0-9][A-Za-z0-9 _./&>'-]*$/.test(s) && !/ $/.test(s) && !YAML_WORDS.test(s)
      && !/^\d{4}-\d\d?-\d\d?/.test(s);  // a date unquoted is a date, not a code
    return plain ? s : JSON.stringify(s);
  }

  const yamlFlow = (v) => {
    if (Array.isArray(v)) return `[${v.map(yamlFlow).join(", ")}]`;
    if (v && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${k}: ${yamlFlow(x)}`).join(", ")}}`;
    return yamlScalar(v);
  };

  /** The rules document as a rules file's YAML: block's lists, then one "- key: value" entry per rule. */
  function toYaml(doc) {
    const lines = [];
    if (doc.block) {
      lines.push("block:");
      for (const [key, values] of Object.entries(doc.block)) lines.push(`  ${key}: ${yamlFlow(values)}`);
    }
    for (const kind of ["pin", "do_not_pair", "boost", "bury"]) {
      if (!doc[kind]) continue;
      lines.push(`${kind}:`);
      for (const entry of doc[kind]) {
        const pairs = Object.entries(entry || {});
        if (!pairs.length) lines.push("  - {}");
        pairs.forEach(([key, value], i) => lines.push(`${i ? "    " : "  - "}${key}: ${yamlFlow(value)}`));
      }
    }
    return lines.length ? `${lines.join("\n")}\n` : "";
  }

  let textEdited = false;  // the text view was edited last: it is the draft, sent as YAML

  function showText() {
    textEdited = false;
    $("rules-text").value = toYaml(documentOf(draft));
  }

  function textChanged() {
    textEdited = true;
    scheduleCheck();
  }

  /** The draft as the API takes it: the text as typed, or the form's document. */
  const draftBody = () => (textEdited ? { yaml: $("rules-text").value } : { rules: documentOf(draft) });

  // --- rules: checking as typed

  function scheduleCheck() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, CHECK_DELAY_MS);
  }

  function clearProblems() {
    for (const node of document.querySelectorAll("#rules-form [aria-invalid]")) {
      node.removeAttribute("aria-invalid");
      node.removeAttribute("aria-describedby");
    }
    for (const node of document.querySelectorAll("#rules-form .field-error")) node.textContent = "";
  }

  /** The problem shown at its field (the first field whose place it names), else under the form. */
  function showProblem(problem, inText) {
    clearProblems();
    const text = C().sentence(problem.place === "rules" ? problem.message : `${problem.place}: ${problem.message}`);
    if (inText) {  // at the text view too, with its line
      const area = $("rules-text");
      area.setAttribute("aria-invalid", "true");
      area.setAttribute("aria-describedby", "rules-text-error");
      $("rules-text-error").textContent = problem.line ? `Line ${problem.line}: ${text}` : text;
    }
    const fields = [...document.querySelectorAll("#rules-form [data-place]")].filter((n) => !n.hidden && !n.closest("[hidden]"));
    const exact = fields.find((n) => n.dataset.place === problem.place)
      || fields.find((n) => problem.place.startsWith(`${n.dataset.place}`) && n.tagName !== "SELECT")
      || fields.find((n) => n.dataset.place.startsWith(`${problem.place}.`) && n.tagName !== "SELECT");
    const entry = problem.place.match(/^([a-z_]+\[\d+\])/);
    const holder = entry && document.querySelector(`#rules-form [data-error-for="${CSS.escape(entry[1])}"]`);
    if (exact) {
      exact.setAttribute("aria-invalid", "true");
      if (holder) {
        holder.id = `${exact.id}-error`;
        holder.textContent = text;
        exact.setAttribute("aria-describedby", holder.id);
      }
    }
    $("rules-check").textContent = text;
    $("rules-check").className = "status notice";
    setReady(false);
  }

  function setReady(ok) {
    $("rules-preview").disabled = !ok;
    $("rules-publish").disabled = !ok;
  }

  async function check() {
    if (!may("rules")) return;
    if (checkAbort) checkAbort.abort();
    checkAbort = new AbortController();
    try {
      const sent = draftBody();
      const answer = await C().api("rules/check", { method: "POST", body: sent, signal: checkAbort.signal });
      if (sent.yaml !== undefined && answer.document && textEdited) {
        draft = fromDocument(answer.document);  // the form follows the text
        renderForm();
      }
      if (!answer.ok) {
        showProblem(answer.error, sent.yaml !== undefined);
        return;
      }
      clearProblems();
      const note = $("rules-check");
      note.className = "status";
      note.textContent = ["Ready to preview and publish.", ...answer.summary, ...answer.warnings.map((w) => C().sentence(w))].join(" ");
      setReady(true);
    } catch (err) {
      C().failed(err);
    }
  }

  // --- rules: loading, preview, publish, roll back

  async function loadRules() {
    const status = $("rules-status");
    status.textContent = "Loading the rules…";
    try {
      const current = await C().api("rules");
      status.textContent = current.version
        ? `In force: rules version ${current.version}, published ${C().when(current.created_at)}${current.source ? ` from ${current.source}` : ""}. ${current.summary.join(" ")}`
        : "No rules are in force yet.";
      $("rules-rollback").disabled = !current.version;
      rulesInForce = current.rules;
      draft = fromDocument(current.rules);
      renderForm();
      showText();
      scheduleCheck();
    } catch (err) {
      status.textContent = "";
      C().failed(err);
    }
  }

  function itemLine(entry, side) {
    const { el } = C();
    const marks = {
      pinned: "pinned", new: "new", moved: `moved from ${entry.was}`, removed: "removed",
    };
    const mark = side === "after" ? marks[entry.change] : entry.change === "removed" ? "removed" : null;
    return el("li", { class: mark ? `changed ${entry.change}` : null },
      el("span", { class: "code", text: entry.stock_code }), " ", entry.description,
      mark ? el("strong", { class: "mark", text: ` ${mark}` }) : null);
  }

  function renderPreview(result) {
    const { el, plural } = C();
    const c = result.counts;
    const box = $("rules-preview-result");
    const summary = el("p", { class: "preview-counts", id: "preview-counts" },
      `${c.affected.toLocaleString()} of ${plural(c.baskets, "basket", "baskets")} affected: `,
      `${plural(c.removed, "item", "items")} removed, ${c.pinned.toLocaleString()} pinned, ${c.moved.toLocaleString()} moved, ${c.added.toLocaleString()} new `,
      `(as of ${C().when(result.as_of)}).`);
    const rows = result.baskets.filter((b) => b.changed);
    const blocks = rows.map((b) => {
      const removed = new Set(b.removed.map((r) => r.stock_code));
      const before = b.before.map((e) => ({ ...e, change: removed.has(e.stock_code) ? "removed" : null }));
      return el("article", { class: "preview-basket" },
        el("h3", { text: b.invoice === "typed" ? "Your basket" : `Invoice ${b.invoice}` }),
        el("p", { class: "hint", text: b.basket.map((i) => `${i.stock_code} ${i.description}`).join("; ") }),
        el("div", { class: "before-after" },
          el("div", {}, el("h4", { text: "Before" }), el("ol", { class: "preview-list" }, ...before.map((e) => itemLine(e, "before")))),
          el("div", {}, el("h4", { text: "After" }), el("ol", { class: "preview-list" }, ...b.after.map((e) => itemLine(e, "after"))))));
    });
    box.replaceChildren(summary, ...(rows.length ? blocks : [el("p", { class: "hint", text: "No answer changes." })]));
  }

  async function preview() {
    const button = $("rules-preview");
    button.disabled = true;
    $("rules-outcome").textContent = "Previewing on real baskets…";
    const typed = list($("rules-basket").value);
    try {
      const result = await C().api("rules/preview", {
        method: "POST",
        body: { ...draftBody(), baskets: typed.length ? [typed] : [], as_of: utc($("rules-as-of").value) || null },
      });
      $("rules-outcome").textContent = "Preview ready: nothing is published yet.";
      renderPreview(result);
    } catch (err) {
      $("rules-outcome").textContent = "";
      C().failed(err);
    } finally {
      button.disabled = false;
    }
  }

  async function publish() {
    const button = $("rules-publish");
    button.disabled = true;
    try {
      const result = await C().api("rules", { method: "POST", body: draftBody() });
      $("rules-outcome").textContent = `Published rules version ${result.version}. Answers follow it within a few seconds.`;
      C().clearError();
      await loadRules();
      follow("rules_version", result.version, "rules-outcome", `Published rules version ${result.version}: answers follow it now.`);
    } catch (err) {
      C().failed(err);
    } finally {
      button.disabled = false;
    }
  }

  /** Once the server answers with version as its field (health's rules_version, feed_version: it looks every
   *  MODEL_POLL_SECONDS), say message in outcome and refresh the try-out panel's answer. */
  async function follow(field, version, outcome, message) {
    for (let i = 0; i < 60; i += 1) {
      try {
        if (((await C().api("health"))[field] ?? null) === version) {
          $(outcome).textContent = message;
          C().refreshTryIt();
          return;
        }
      } catch { /* not answering for a moment: look again */ }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  function addRule(kind) {
    draft = readForm();
    const fresh = { pin: { basket: { code: [] }, item: { code: "" }, position: 1 },
      do_not_pair: { basket: { code: [] }, item: { code: [] } },
      boost: { code: [], factor: 1.5 }, bury: { code: [], factor: 0.5 } }[kind];
    draft[kind].push(fresh);
    renderForm();
    showText();
    const rows = document.querySelectorAll(`#rules-form .rule-rows[data-kind="${kind}"] .rule-row`);
    const first = rows[rows.length - 1].querySelector("input, select");
    if (first) first.focus();
  }

  function removeRule(kind, i) {
    draft = readForm();
    draft[kind].splice(i, 1);
    renderForm();
    showText();
    scheduleCheck();
    $("rules-check").focus();
  }

  // --- the rule behind a pinned, boosted or buried item (the try-out panel's reasons)

  let rulesInForce = null;  // the last GET /rules document, for naming rules in reasons

  const categoryKeys = (path) => {
    const levels = String(path || "").toLowerCase().split(">").map((p) => p.trim().replace(/\s+/g, " ")).filter(Boolean);
    return new Set([...levels, ...levels.map((_, i) => levels.slice(0, i + 1).join(">")).slice(1)]);
  };

  function selects(sel, item) {
    if (!sel) return false;
    if (sel.code) return [].concat(sel.code).map(String).includes(item.stock_code);
    if (sel.category) {
      const keys = categoryKeys(item.category);
      return [].concat(sel.category).some((c) => keys.has(String(c).toLowerCase().split(">").map((p) => p.trim().replace(/\s+/g, " ")).join(">")));
    }
    if (sel.brand) return [].concat(sel.brand).some((b) => String(b).trim().toLowerCase() === String(item.brand || "").trim().toLowerCase());
    return false;
  }

  const what = (sel) => `${selectorKind(sel)} ${selectorText(sel)}`;

  /** "Pinned by rule 3: with 22423, show 22699 first", or the boost or bury behind an item; null when unknown. */
  function ruleFor(item, basket) {
    const doc = rulesInForce;
    if (!doc) return null;
    if (item.source === "pinned") {
      const pins = doc.pin || [];
      const i = pins.findIndex((p) => String(p.item && p.item.code) === item.stock_code
        && [].concat(p.basket.code || []).map(String).some((c) => basket.includes(c)));
      if (i < 0) return null;
      const with_ = [].concat(pins[i].basket.code).map(String).find((c) => basket.includes(c));
      const where = pins[i].position > 1 ? `at position ${pins[i].position}` : "first";
      return `Pinned by rule ${i + 1}: with ${with_}, show ${item.stock_code} ${where}.`;
    }
    if (typeof item.boost === "number" && item.boost !== 1) {
      const kind = item.boost > 1 ? "boost" : "bury";
      const i = (doc[kind] || []).findIndex((e) => selects(e, item));
      if (i < 0) return null;
      const verb = kind === "boost" ? "Boosted" : "Buried";
      return `${verb} ×${item.boost} by ${kind} rule ${i + 1}: ${what(doc[kind][i])}.`;
    }
    return null;
  }

  async function loadRulesInForce() {
    try {
      rulesInForce = (await C().api("rules")).rules;
    } catch { rulesInForce = null; }
  }

  // --- product feed

  let checkedFile = null;

  async function loadFeed() {
    try {
      const health = await C().api("health");
      $("feed-status").textContent = health.feed_version
        ? `In force: product feed version ${health.feed_version}.` : "No product feed is in force yet: every product counts as in stock.";
    } catch (err) {
      C().failed(err);
    }
  }

  function changeLine(label, change, describe) {
    const { el } = C();
    const codes = change.codes || (change.items || []).map(describe);
    const more = change.count > codes.length ? ` and ${(change.count - codes.length).toLocaleString()} more` : "";
    return el("li", { "data-change": label },
      el("strong", { text: `${change.count.toLocaleString()} ` }), label,
      codes.length ? el("span", { class: "hint", text: `: ${codes.join(", ")}${more}` }) : null);
  }

  function renderFeedSummary(summary) {
    const { el } = C();
    const c = summary.changes;
    const price = (p) => `${p.stock_code} ${p.before.toLocaleString()} → ${p.after.toLocaleString()}`;
    $("feed-summary").replaceChildren(
      el("h3", { text: `${summary.file}: ${c.products.toLocaleString()} products` }),
      el("p", { class: "hint", text: summary.lines.map((l) => C().sentence(l)).join(" ") }),
      el("ul", { class: "feed-changes", "aria-label": "What the file changes" },
        changeLine("added", c.added), changeLine("removed", c.removed), changeLine("out of stock", c.out_of_stock),
        changeLine("back in stock", c.back_in_stock), changeLine("prices changed by more than 20%", c.price_changes, price),
        changeLine("unknown to the model", c.unknown_to_model)),
      el("p", { class: "hint", text: "Nothing is published yet: Publish makes this feed the one in force." }));
  }

  async function checkFeed(event) {
    event.preventDefault();
    const file = $("feed-file").files[0];
    $("feed-publish").disabled = true;
    checkedFile = null;
    if (!file) {
      $("feed-outcome").textContent = "Choose a feed file first.";
      return;
    }
    $("feed-outcome").textContent = `Checking ${file.name}…`;
    try {
      const summary = await C().api(`feed/preview?name=${encodeURIComponent(file.name)}`, { method: "POST", raw: file });
      checkedFile = file;
      $("feed-outcome").textContent = `${file.name} can be published.`;
      renderFeedSummary(summary);
      $("feed-publish").disabled = false;
    } catch (err) {
      $("feed-outcome").textContent = "";
      $("feed-summary").replaceChildren();
      C().failed(err);
    }
  }

  async function publishFeed() {
    if (!checkedFile) return;
    $("feed-publish").disabled = true;
    try {
      const done = await C().api(`feed?name=${encodeURIComponent(checkedFile.name)}`, { method: "POST", raw: checkedFile });
      $("feed-outcome").textContent = `Published product feed version ${done.version}. Answers follow it within a few seconds.`;
      $("feed-summary").replaceChildren();
      C().clearError();
      loadFeed();
      follow("feed_version", done.version, "feed-outcome", `Published product feed version ${done.version}: answers follow it now.`);
    } catch (err) {
      C().failed(err);
    }
  }

  // --- versions

  function versionLabel(v) {
    const parts = [];
    if (v.file) parts.push(`trained on ${v.file}`);
    if (v.first && v.last) parts.push(`purchases from ${C().day(v.first)} to ${C().day(v.last)}`);
    if (typeof v.products === "number") parts.push(`${v.products.toLocaleString()} products`);
    if (v.engine) parts.push(`engine: ${v.engine}`);
    if (v.created_at) parts.push(`made ${C().when(v.created_at)}`);
    return parts.join(", ");
  }

  function versionItem(v) {
    const { el } = C();
    const figure = typeof v.hr === "number"
      ? el("abbr", { title: "HR@10: the share of held-out baskets whose bought item was in the top 10", text: `${(v.hr * 100).toFixed(1)}% hit rate` })
      : null;
    const actions = el("div", { class: "actions" });
    if (may("promote") && v.state === "staged") {
      actions.append(el("button", { type: "button", "data-promote": v.version, text: "Promote" }));
    } else if (may("promote") && v.state !== "active" && !v.problem) {
      actions.append(el("button", { type: "button", class: "secondary", "data-activate": v.version, text: "Activate" }));
    }
    return el("li", { "data-version": v.version },
      el("div", {}, v.state ? el("span", { class: "state", text: `${v.state === "active" ? "Active" : "Staged"}: ` }) : null,
        el("code", { text: v.version })),
      el("p", { class: "hint", text: versionLabel(v) }),
      el("p", {}, v.quality ? `Quality: ${C().sentence(v.quality)} ` : "No held-out quality figure. ", figure),
      v.problem ? el("p", { class: "notice", text: C().sentence(v.problem) }) : null,
      actions);
  }

  async function loadVersions() {
    const status = $("versions-status");
    status.textContent = "Loading the versions…";
    try {
      const answer = await C().api("versions");
      const active = answer.models.find((v) => v.state === "active");
      const feed = answer.feeds.find((v) => v.state === "active");
      const rules = answer.rules.find((v) => v.state === "active");
      status.textContent = `${C().plural(answer.models.length, "model version", "model versions")}; in force: model ${active ? active.version : "none"}, `
        + `product feed ${feed ? feed.version : "none"}, rules ${rules ? rules.version : "none"}.`;
      $("versions-rollback").disabled = !answer.previous.length;
      $("versions-list").replaceChildren(...answer.models.map(versionItem));
      $("versions-feed-rollback").disabled = !answer.feeds_previous.length;
      $("versions-feed-list").replaceChildren(...answer.feeds.map((v) => otherItem("feed", v)));
      $("versions-rules-rollback").disabled = !answer.rules_previous.length;
      $("versions-rules-list").replaceChildren(...answer.rules.map((v) => otherItem("rules", v)));
    } catch (err) {
      status.textContent = "";
      C().failed(err);
    }
  }

  // Feed and rules versions: no gate to pass (a feed or rules version was checked when it was published).
  const shown = (page) => !$(`page-${page}`).hidden;
  const OTHER = {
    feed: { noun: "product feed", right: "feed", health: "feed_version" },
    rules: { noun: "rules", right: "rules", health: "rules_version" },
  };

  function otherItem(kind, v) {
    const { el } = C();
    const parts = [];
    if (v.file) parts.push(`from ${v.file}`);
    if (v.label) parts.push(v.label);
    if (v.created_at) parts.push(`published ${C().when(v.created_at)}`);
    const actions = el("div", { class: "actions" });
    if (may(OTHER[kind].right) && v.state !== "active" && !v.problem) {
      actions.append(el("button", { type: "button", class: "secondary", "data-activate-other": `${kind}:${v.version}`, text: "Activate" }));
    }
    return el("li", { "data-version": v.version },
      el("div", {}, v.state === "active" ? el("span", { class: "state", text: "In force: " }) : null, el("code", { text: v.version })),
      el("p", { class: "hint", text: parts.join(", ") }),
      v.problem ? el("p", { class: "notice", text: C().sentence(v.problem) }) : null,
      actions);
  }

  /** Activate an earlier feed or rules version, or roll back to the one before; say when answers follow it. */
  async function changeOther(kind, version, outcomeId = `versions-${kind}-outcome`) {
    const { noun, health } = OTHER[kind];
    const outcome = $(outcomeId);
    try {
      const done = version
        ? await C().api(`${kind}/activate`, { method: "POST", body: { version } })
        : await C().api(`${kind}/rollback`, { method: "POST" });
      const none = done.version === "none";
      const said = none ? `Rolled back: no ${noun} are in force now` : `${version ? "Activated" : "Rolled back"}: ${noun} version ${done.version} is in force`;
      outcome.textContent = `${said}; answers follow it within a few seconds.`;
      if (kind === "rules") {
        $("rules-preview-result").replaceChildren();
        await (shown("rules") ? loadRules() : loadRulesInForce());  // reasons name the rules in force
      }
      if (shown("feed")) loadFeed();
      if (shown("versions")) await loadVersions();
      await follow(health, none ? null : done.version, outcome.id, `${said}, and answers follow it now.`);
    } catch (err) {
      C().failed(err);
    }
  }

  /** Promote or activate through the gate; its comparison shown, and a refusal offered to an admin to force. */
  async function gated(path, body, what) {
    const { el } = C();
    const box = $("versions-gate");
    box.replaceChildren(el("p", { class: "gate", text: "Comparing with the active model…" }));
    try {
      const done = await C().api(path, { method: "POST", body });
      box.replaceChildren(el("p", { class: "gate", id: "gate-outcome" },
        `${what} model version ${done.version} is active. `, done.comparison ? C().sentence(`The gate compared: ${done.comparison}`) : ""));
      await loadVersions();
    } catch (err) {
      if (!(err instanceof C().ApiError) || err.status !== 409) {
        box.replaceChildren();
        C().failed(err);
        return;
      }
      const parts = [el("p", { class: "gate refused", id: "gate-outcome", text: err.message })];
      if (may("force")) {
        const confirm = el("input", { type: "checkbox", id: "gate-confirm" });
        const force = el("button", { type: "button", id: "gate-force", text: `${what === "Promoted" ? "Promote" : "Activate"} anyway`, disabled: true });
        confirm.addEventListener("change", () => { force.disabled = !confirm.checked; });
        force.addEventListener("click", () => gated(path, { ...body, force: true }, what));
        parts.push(el("p", {}, confirm, " ", el("label", { for: "gate-confirm", class: "inline", text: "I have read the comparison and want it active anyway" })), force);
      } else {
        parts.push(el("p", { class: "hint", text: "Only an admin can activate a model the gate refuses." }));
      }
      box.replaceChildren(...parts);
      const first = box.querySelector("input, button");
      if (first) first.focus();
    }
  }

  async function rollBackModel() {
    try {
      const done = await C().api("versions/rollback", { method: "POST" });
      $("versions-gate").replaceChildren(C().el("p", { class: "gate", id: "gate-outcome", text: `Rolled back: model version ${done.version} is active again.` }));
      await loadVersions();
    } catch (err) {
      C().failed(err);
    }
  }

  // --- start

  function start() {
    document.addEventListener("console:enter", enter);
    document.addEventListener("console:leave", leave);
    window.addEventListener("hashchange", () => route(true));
    const form = $("rules-form");
    form.addEventListener("change", formChanged);
    form.addEventListener("input", (event) => (event.target.id === "rules-text" ? textChanged() : formChanged(event)));
    form.addEventListener("submit", (event) => event.preventDefault());
    form.addEventListener("click", (event) => {
      const add = event.target.closest("[data-add]");
      if (add) addRule(add.dataset.add);
      const remove = event.target.closest("[data-remove]");
      if (remove) {
        const [kind, i] = remove.dataset.remove.split(":");
        removeRule(kind, Number(i));
      }
    });
    $("rules-preview").addEventListener("click", preview);
    $("rules-publish").addEventListener("click", publish);
    $("rules-rollback").addEventListener("click", () => changeOther("rules", null, "rules-outcome"));
    $("versions-rollback").addEventListener("click", rollBackModel);
    $("feed-form").addEventListener("submit", checkFeed);
    $("feed-file").addEventListener("change", () => { $("feed-publish").disabled = true; checkedFile = null; });
    $("feed-publish").addEventListener("click", publishFeed);
    $("feed-rollback").addEventListener("click", () => changeOther("feed", null, "feed-outcome"));
    $("versions-list").addEventListener("click", (event) => {
      const promote = event.target.closest("[data-promote]");
      if (promote) gated("versions/promote", {}, "Promoted");
      const activate = event.target.closest("[data-activate]");
      if (activate) gated("versions/activate", { version: activate.dataset.activate }, "Activated");
    });
    for (const kind of ["feed", "rules"]) {
      $(`versions-${kind}-list`).addEventListener("click", (event) => {
        const button = event.target.closest("[data-activate-other]");
        if (button) changeOther(kind, button.dataset.activateOther.split(":")[1]);
      });
      $(`versions-${kind}-rollback`).addEventListener("click", () => changeOther(kind, null));
    }
  }

  start();
})();
