// icswatch enterprise dashboard: plain JavaScript over /api/v1, charts from the vendored Apache ECharts.
// Every value from the API is put in the page with textContent (never innerHTML): plant data is data.
// The API token lives in sessionStorage (this tab only) and is sent as a bearer token.
"use strict";

const I18N = {
  en: {
    title: "icswatch SOC", nav_overview: "Overview", nav_alerts: "Alerts", nav_incidents: "Incidents", nav_assets: "Assets",
    nav_jobs: "Replay", nav_rules: "Rules", dataset: "Dataset", live: "live (sensors)", logout: "Sign out",
    login_title: "Sign in with an API token", login_help: "Issue one with: icswatch token issue --role viewer --name NAME",
    login: "Sign in", bad_token: "The token was refused", chart_timeline: "Alert timeline (by severity)",
    chart_severity: "By severity", chart_protocol: "By protocol", chart_rules: "Top rules", chart_techniques: "Top ATT&CK techniques",
    alerts: "Alerts", incidents: "Incidents", assets: "Assets", rules: "Rules", jobs: "Replay a capture (testers)",
    any_severity: "any severity", any_protocol: "any protocol", any_status: "any status", search: "search text", from: "from", to: "to",
    sort_newest: "newest first", sort_oldest: "oldest first", sort_severity: "gravest first", apply: "Apply", reset: "Reset",
    more: "Load more", col_time: "Time (UTC)", col_severity: "Severity", col_rule: "Rule", col_technique: "Technique",
    col_flow: "Source → destination", col_protocol: "Protocol", col_status: "Status", col_assignee: "Assignee", col_level: "Level",
    col_asset: "Asset", col_alerts: "Alerts", col_chain: "Technique chain", col_last: "Last alert", col_reported: "Reported",
    col_address: "Address", col_role: "Role", col_vendor: "Vendor / product", col_protocols: "Protocols", col_events: "Events",
    col_job: "Job", col_state: "State", col_progress: "Progress", col_packets: "Packets", col_enabled: "Enabled",
    export_csv: "Export CSV", graph: "Who talks to whom (client → server, per protocol)", upload: "Upload and replay", label: "label",
    reload: "Reload rule files", footer: "icswatch — passive ICS security monitoring. Times are capture times (UTC); addresses are 0-based wire addresses.",
    card_alerts: "alerts", card_critical: "critical", card_high: "high", card_open: "open alerts", card_incidents: "open incidents",
    card_assets: "assets", of: "of", shown: "shown", acknowledge: "Acknowledge", close: "Close", false_positive: "False positive",
    reopen: "Reopen", assign_me: "Assign to me", comment: "Comment", report: "Report to province", results: "Results (JSON)",
    view: "View", delete: "Delete", cancel: "Cancel", enable: "Enable", disable: "Disable", yes: "yes", no: "no",
    description: "Description", evidence: "Evidence and context", activity: "Activity", techniques: "Techniques", flow: "Flow",
    asset: "Asset", incident: "Incident", count: "Events", reason_prompt: "Reason?", comment_prompt: "Comment?",
    fp_prompt: "Why is it a false positive? (a standing suppression of this rule for this pair is added)",
    timeline: "Timeline", level: "Level", status: "Status", close_incident: "Close incident", ack_incident: "Acknowledge incident",
    uploading: "uploading…", queued: "queued", running: "running", done: "done", failed: "failed", cancelled: "cancelled",
    open: "open", acknowledged: "acknowledged", closed: "closed", false_positive_st: "false positive",
    low: "low", medium: "medium", high: "high", critical: "critical", none: "—",
  },
  zh: {
    title: "icswatch 安全运营中心", nav_overview: "总览", nav_alerts: "告警", nav_incidents: "事件", nav_assets: "资产",
    nav_jobs: "回放", nav_rules: "规则", dataset: "数据集", live: "实时（探针）", logout: "退出",
    login_title: "使用 API 令牌登录", login_help: "签发令牌：icswatch token issue --role viewer --name 姓名",
    login: "登录", bad_token: "令牌无效", chart_timeline: "告警时间线（按级别）", chart_severity: "按严重程度",
    chart_protocol: "按协议", chart_rules: "告警最多的规则", chart_techniques: "ATT&CK 技术排行",
    alerts: "告警", incidents: "安全事件", assets: "资产", rules: "检测规则", jobs: "上传抓包回放（测试）",
    any_severity: "全部级别", any_protocol: "全部协议", any_status: "全部状态", search: "搜索", from: "从", to: "至",
    sort_newest: "最新优先", sort_oldest: "最早优先", sort_severity: "最严重优先", apply: "筛选", reset: "重置",
    more: "加载更多", col_time: "时间 (UTC)", col_severity: "级别", col_rule: "规则", col_technique: "技术",
    col_flow: "源 → 目的", col_protocol: "协议", col_status: "状态", col_assignee: "处理人", col_level: "事件等级",
    col_asset: "资产", col_alerts: "告警数", col_chain: "技术链", col_last: "最近告警", col_reported: "已上报",
    col_address: "地址", col_role: "角色", col_vendor: "厂商 / 型号", col_protocols: "协议", col_events: "事件数",
    col_job: "任务", col_state: "状态", col_progress: "进度", col_packets: "数据包", col_enabled: "启用",
    export_csv: "导出 CSV", graph: "通信关系（客户端 → 服务端，按协议）", upload: "上传并回放", label: "名称",
    reload: "重新加载规则文件", footer: "icswatch — 被动式工控安全监测。时间为抓包时间 (UTC)；地址为报文中的 0 起始地址。",
    card_alerts: "告警", card_critical: "特别严重", card_high: "高危", card_open: "未处理告警", card_incidents: "未关闭事件",
    card_assets: "资产", of: "共", shown: "已显示", acknowledge: "确认", close: "关闭", false_positive: "误报",
    reopen: "重新打开", assign_me: "指派给我", comment: "备注", report: "上报省级平台", results: "结果 (JSON)",
    view: "查看", delete: "删除", cancel: "取消", enable: "启用", disable: "停用", yes: "是", no: "否",
    description: "说明", evidence: "证据与上下文", activity: "处置记录", techniques: "技术", flow: "流",
    asset: "资产", incident: "事件", count: "事件数", reason_prompt: "原因？", comment_prompt: "备注？",
    fp_prompt: "为何是误报？（将为该规则和这对地址添加常驻抑制）",
    timeline: "时间线", level: "等级", status: "状态", close_incident: "关闭事件", ack_incident: "确认事件",
    uploading: "上传中…", queued: "排队中", running: "运行中", done: "完成", failed: "失败", cancelled: "已取消",
    open: "待处理", acknowledged: "已确认", closed: "已关闭", false_positive_st: "误报",
    low: "低", medium: "中", high: "高", critical: "严重", none: "—",
  },
};
const SEV_COLORS = { critical: "#b71c1c", high: "#e65100", medium: "#f9a825", low: "#2e7d9a" };
const SEVERITIES = ["critical", "high", "medium", "low"];
const STATUSES = ["open", "acknowledged", "closed", "false_positive"];
const PAGE = 100;

const S = {
  token: sessionStorage.getItem("icswatch.token") || "",
  lang: localStorage.getItem("icswatch.lang") || ((navigator.language || "").startsWith("zh") ? "zh" : "en"),
  me: null, dataset: "live", cursor: null, alerts: [], total: 0, selected: null, charts: {}, jobsTimer: null, loaded: false,
};

const $ = (id) => document.getElementById(id);
const t = (k) => (I18N[S.lang] && I18N[S.lang][k]) || I18N.en[k] || k;
const stName = (s) => t(s === "false_positive" ? "false_positive_st" : s);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtTime(ts) {
  if (ts === null || ts === undefined) return t("none");
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}
const fmtNum = (n) => (n === null || n === undefined ? t("none") : Number(n).toLocaleString(S.lang === "zh" ? "zh-CN" : "en-US"));

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + S.token }, opts.headers || {});
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, cache: "no-store" });
  if (r.status === 401) {
    signOut(t("bad_token"));
    throw new Error("unauthorized");
  }
  if (opts.raw) return r;
  const ct = r.headers.get("content-type") || "";
  const body = ct.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : String(r.status);
    throw new Error(msg);
  }
  return body;
}

function ds(path) {
  const sep = path.includes("?") ? "&" : "?";
  return path + sep + "dataset=" + encodeURIComponent(S.dataset);
}

// --- language ------------------------------------------------------------------------------------
function applyLang() {
  document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  $("lang").textContent = S.lang === "zh" ? "English" : "中文";
  fillStaticSelects();
}

function fillStaticSelects() {
  const sev = $("f-severity"), st = $("f-status");
  const keepSev = sev.value, keepSt = st.value;
  sev.replaceChildren(h("option", { value: "", text: t("any_severity") }), ...SEVERITIES.map((s) => h("option", { value: s, text: t(s) })));
  st.replaceChildren(h("option", { value: "", text: t("any_status") }), ...STATUSES.map((s) => h("option", { value: s, text: stName(s) })));
  sev.value = keepSev;
  st.value = keepSt;
}

// --- sign in -------------------------------------------------------------------------------------
function signOut(message) {
  S.token = "";
  sessionStorage.removeItem("icswatch.token");
  $("main").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
}

async function signIn() {
  try {
    S.me = await api("/api/v1/auth/me");
  } catch (e) {
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = S.me.name + " · " + S.me.role;
  $("rules-reload").hidden = S.me.role !== "admin";
  await loadAll();
}

const canWrite = () => S.me && (S.me.role === "analyst" || S.me.role === "admin");

// --- loading -------------------------------------------------------------------------------------
async function loadAll() {
  S.loaded = false;
  await loadDatasets();
  await Promise.all([loadOverview(), loadAlerts(true), loadIncidents(), loadAssets(), loadJobs(), loadRules()]);
  S.loaded = true;
  document.body.dataset.loaded = "1";
}

async function loadDatasets() {
  const sel = $("dataset");
  const jobs = await api("/api/v1/jobs?limit=50");
  const keep = S.dataset;
  sel.replaceChildren(h("option", { value: "live", text: t("live") }),
    ...jobs.items.filter((j) => j.state === "done").map((j) => h("option", { value: j.id, text: j.label + " · " + j.id.slice(4, 10) })));
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "live";
  S.dataset = sel.value;
}

function chart(id) {
  if (!window.echarts) return null;
  let c = S.charts[id];
  if (!c) c = S.charts[id] = echarts.init($(id), null, { renderer: "canvas" });
  return c;
}

async function loadOverview() {
  const [sum, timeline, protos, rules, techs] = await Promise.all([
    api(ds("/api/v1/stats/summary")),
    api(ds("/api/v1/stats/counts?by=severity&auto=true")),
    api(ds("/api/v1/stats/counts?by=protocol")),
    api(ds("/api/v1/stats/counts?by=rule")),
    api(ds("/api/v1/stats/counts?by=technique")),
  ]);
  const cards = [
    ["card_alerts", sum.alerts, ""], ["card_critical", sum.by_severity.critical, "critical"], ["card_high", sum.by_severity.high, "high"],
    ["card_open", sum.by_status.open, ""], ["card_incidents", sum.open_incidents, ""], ["card_assets", sum.assets, ""],
  ];
  $("cards").replaceChildren(...cards.map(([k, n, cls]) => h("div", { class: "card " + cls },
    h("div", { class: "n", text: fmtNum(n) }), h("div", { class: "l", text: t(k) }))));
  // Timeline: stacked bars per severity over round time buckets, on a time axis (gaps show as gaps).
  const series = SEVERITIES.map((s) => ({
    name: t(s), type: "bar", stack: "sev", itemStyle: { color: SEV_COLORS[s] }, barMaxWidth: 18, barMinWidth: 3,
    data: timeline.buckets.filter((b) => b.key === s).map((b) => [b.bucket * 1000, b.count]),
  }));
  const c1 = chart("chart-timeline");
  if (c1) c1.setOption({
    animation: false, tooltip: { trigger: "axis" }, legend: { top: 0 }, grid: { left: 40, right: 16, top: 28, bottom: 28 },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } }, yAxis: { type: "value", minInterval: 1 }, series,
  }, true);
  const pie = (id, data, colors) => {
    const c = chart(id);
    if (!c) return;
    c.setOption({
      animation: false, tooltip: { trigger: "item" }, legend: { bottom: 0, type: "scroll" },
      series: [{ type: "pie", radius: ["38%", "68%"], center: ["50%", "44%"], data, label: { formatter: "{c}" }, minShowLabelAngle: 8,
        itemStyle: colors ? { color: (p) => colors[p.data.key] } : undefined }],
    }, true);
  };
  pie("chart-severity", SEVERITIES.filter((s) => sum.by_severity[s]).map((s) => ({ name: t(s), value: sum.by_severity[s], key: s })), SEV_COLORS);
  pie("chart-protocol", protos.buckets.map((b) => ({ name: b.key || "?", value: b.count })));
  const bars = (id, buckets, color) => {
    const c = chart(id);
    if (!c) return;
    const top = buckets.slice(0, 8).reverse();
    c.setOption({
      animation: false, tooltip: { trigger: "axis" }, grid: { left: 8, right: 30, top: 6, bottom: 6, containLabel: true },
      xAxis: { type: "value", minInterval: 1 }, yAxis: { type: "category", data: top.map((b) => b.key), axisLabel: { width: 170, overflow: "truncate" } },
      series: [{ type: "bar", data: top.map((b) => b.count), itemStyle: { color }, label: { show: true, position: "right" } }],
    }, true);
  };
  bars("chart-rules", rules.buckets, "#0b6bcb");
  bars("chart-techniques", techs.buckets, "#6a4c93");
  const protoSel = $("f-protocol");
  const keep = protoSel.value;
  protoSel.replaceChildren(h("option", { value: "", text: t("any_protocol") }), ...protos.buckets.map((b) => h("option", { value: b.key, text: b.key })));
  protoSel.value = keep;
}

function alertFilters() {
  const p = new URLSearchParams();
  const v = (id) => $(id).value.trim();
  if (v("f-severity")) p.append("severity", v("f-severity"));
  if (v("f-protocol")) p.append("protocol", v("f-protocol"));
  if (v("f-status")) p.append("status", v("f-status"));
  if (v("f-technique")) p.append("technique", v("f-technique"));
  if (v("f-ip")) p.append("ip", v("f-ip"));
  if (v("f-text")) p.append("q", v("f-text"));
  if (v("f-start")) p.append("start", v("f-start") + "Z");
  if (v("f-end")) p.append("end", v("f-end") + "Z");
  p.append("sort", v("f-sort") || "-ts");
  return p;
}

async function loadAlerts(reset) {
  if (reset) { S.cursor = null; S.alerts = []; }
  const p = alertFilters();
  p.append("limit", String(PAGE));
  if (S.cursor) p.append("cursor", S.cursor);
  const page = await api(ds("/api/v1/alerts?" + p.toString()));
  S.alerts = S.alerts.concat(page.items);
  S.total = page.total;
  S.cursor = page.next_cursor;
  renderAlerts();
}

function sevBadge(s) { return h("span", { class: "sev " + s, text: t(s) }); }

function renderAlerts() {
  const tbody = $("alerts-table").tBodies[0];
  tbody.replaceChildren(...S.alerts.map((a) => h("tr", { dataset: { id: a.id }, class: S.selected === a.id ? "sel" : "", onclick: () => showAlert(a.id) },
    h("td", { text: fmtTime(a.ts) }), h("td", {}, sevBadge(a.severity)),
    h("td", { title: a.rule_name, text: a.rule_id }), h("td", { title: a.technique_names.join(", "), text: a.techniques.join(", ") }),
    h("td", { text: `${a.src}:${a.sport} → ${a.dst}:${a.dport}` }), h("td", { text: a.protocol }),
    h("td", { class: "st " + a.status, text: stName(a.status) }), h("td", { text: a.assignee || "" }))));
  const total = $("alerts-total");
  total.dataset.total = String(S.total);
  total.dataset.shown = String(S.alerts.length);
  total.textContent = `(${fmtNum(S.alerts.length)} ${t("shown")} / ${t("of")} ${fmtNum(S.total)})`;
  $("alerts-more").hidden = !S.cursor;
}

async function showAlert(id) {
  S.selected = id;
  for (const tr of $("alerts-table").tBodies[0].rows) tr.classList.toggle("sel", tr.dataset.id === id);
  const a = await api(ds("/api/v1/alerts/" + encodeURIComponent(id)));
  const box = $("alert-detail");
  const actions = h("div", { class: "actions" });
  const act = (label, fn) => actions.append(h("button", { type: "button", text: t(label), onclick: fn }));
  if (canWrite()) {
    const post = async (path, json) => {
      try { await api(ds(`/api/v1/alerts/${encodeURIComponent(id)}/${path}`), { method: "POST", json }); } catch (e) { alert(e.message); }
      await loadAlerts(true); await showAlert(id); loadOverview();
    };
    if (a.status === "open") act("acknowledge", () => post("acknowledge", {}));
    if (a.status !== "open") act("reopen", () => post("reopen", {}));
    act("assign_me", () => post("assign", { assignee: S.me.name }));
    act("comment", () => { const text = prompt(t("comment_prompt")); if (text) post("comments", { text }); });
    if (a.status === "open" || a.status === "acknowledged") {
      act("close", () => { const reason = prompt(t("reason_prompt")); if (reason) post("close", { reason }); });
      act("false_positive", () => { const reason = prompt(t("fp_prompt")); if (reason) post("false-positive", { reason, action: a.rule_id.startsWith("baseline-") ? "baseline" : "suppress" }); });
    }
  }
  const events = h("table", { class: "data" }, h("thead", {}, h("tr", {}, ...["", "col_time", "flow", "col_protocol", "evidence"].map((k) => h("th", { text: k ? t(k) : "" })))),
    h("tbody", {}, ...a.events.map((e) => h("tr", {},
      h("td", { text: e.role }), h("td", { text: fmtTime(e.ts).slice(11) }),
      h("td", { text: `${e.src || ""} → ${e.dst || ""}` }), h("td", { text: e.protocol }),
      h("td", { class: "wrap", text: [e.function_name, e.unit !== undefined ? "u" + e.unit : "", e.address !== undefined ? "@" + e.address : "",
        e.values ? "=" + JSON.stringify(e.values).slice(0, 60) : "", e.result && e.result !== "ok" ? e.result : ""].filter(Boolean).join(" ") })))));
  box.replaceChildren(
    h("h3", {}, sevBadge(a.severity), " ", a.rule_name),
    h("dl", {},
      h("dt", { text: t("col_rule") }), h("dd", { text: a.rule_id }),
      h("dt", { text: t("col_time") }), h("dd", { text: a.timestamp }),
      h("dt", { text: t("flow") }), h("dd", { text: `${a.src}:${a.sport} → ${a.dst}:${a.dport} (${a.protocol}/${a.transport})` }),
      h("dt", { text: t("asset") }), h("dd", { text: a.asset }),
      h("dt", { text: t("techniques") }), h("dd", { text: a.techniques.map((x, i) => x + " " + (a.technique_names[i] || "")).join("; ") }),
      h("dt", { text: t("status") }), h("dd", { text: stName(a.status) + (a.close_reason ? " — " + a.close_reason : "") }),
      h("dt", { text: t("col_assignee") }), h("dd", { text: a.assignee || t("none") }),
      h("dt", { text: t("incident") }), h("dd", { text: a.incident_id || t("none") }),
      h("dt", { text: t("count") }), h("dd", { text: a.count })),
    actions,
    h("h4", { text: t("description") }), h("p", { text: a.description }),
    h("h4", { text: t("evidence") }), events,
    h("h4", { text: t("activity") }),
    h("ul", {}, ...a.activity.map((x) => h("li", { text: `${fmtTime(x.ts)} ${x.actor}: ${x.action} ${x.detail.text || x.detail.reason || x.detail.comment || ""}` }))));
  box.hidden = false;
}

async function loadIncidents() {
  const page = await api(ds("/api/v1/incidents?limit=200"));
  $("incidents-total").textContent = `(${fmtNum(page.total)})`;
  $("incidents-table").tBodies[0].replaceChildren(...page.items.map((i) => h("tr", { dataset: { id: i.id }, onclick: () => showIncident(i.id) },
    h("td", { class: "lvl l" + i.level, text: `${i.level_name} (${["", "I", "II", "III", "IV"][i.level]})` }),
    h("td", { text: i.asset }), h("td", { text: i.alert_count }), h("td", { text: i.techniques.join(" › ") }),
    h("td", { text: fmtTime(i.last_ts) }), h("td", { class: "st " + i.status, text: stName(i.status) }), h("td", { text: i.reported ? t("yes") : "" }))));
}

async function showIncident(id) {
  const [i, tl] = await Promise.all([api(ds("/api/v1/incidents/" + encodeURIComponent(id))), api(ds(`/api/v1/incidents/${encodeURIComponent(id)}/timeline`))]);
  const box = $("incident-detail");
  const actions = h("div", { class: "actions" });
  if (canWrite()) {
    const post = async (path, json) => {
      try { await api(ds(`/api/v1/incidents/${encodeURIComponent(id)}/${path}`), { method: "POST", json }); } catch (e) { alert(e.message); }
      await loadIncidents(); await showIncident(id);
    };
    if (i.status === "open") actions.append(h("button", { type: "button", text: t("ack_incident"), onclick: () => post("status", { status: "acknowledged" }) }));
    if (i.status === "open" || i.status === "acknowledged") actions.append(h("button", { type: "button", text: t("close_incident"), onclick: () => post("status", { status: "closed" }) }));
    if (i.status !== "open" && i.status !== "acknowledged") actions.append(h("button", { type: "button", text: t("reopen"), onclick: () => post("status", { status: "open" }) }));
    actions.append(h("button", { type: "button", text: t("report"), onclick: () => post("report", { note: "" }) }));
  }
  box.replaceChildren(
    h("h3", {}, h("span", { class: "lvl l" + i.level, text: i.level_name }), " ", i.asset),
    h("dl", {}, h("dt", { text: t("level") }), h("dd", { text: i.level_reason }),
      h("dt", { text: t("status") }), h("dd", { text: stName(i.status) }),
      h("dt", { text: t("col_chain") }), h("dd", { text: i.techniques.join(" › ") }),
      h("dt", { text: t("col_protocols") }), h("dd", { text: i.protocols.join(", ") })),
    actions, h("h4", { text: t("timeline") }),
    h("ul", {}, ...tl.entries.map((e) => h("li", { text: `${e.time.slice(0, 19).replace("T", " ")} ${e.kind === "alert" ? "▲" : "✎"} ${e.title}${e.actor ? " — " + e.actor : ""}` }))));
  box.hidden = false;
}

const ROLE_COLORS = { plc: "#e65100", rtu: "#2e7d32", ied: "#00897b", field_device: "#f9a825", server: "#6d4c41", hmi: "#1e88e5",
  master: "#0d47a1", engineering_station: "#8e24aa", client: "#64b5f6", unknown: "#90a4ae" };

async function loadAssets() {
  const [page, g] = await Promise.all([api(ds("/api/v1/assets?limit=1000&sort=-alerts")), api(ds("/api/v1/assets/graph?limit=400"))]);
  $("assets-total").textContent = `(${fmtNum(page.total)})`;
  $("assets-table").tBodies[0].replaceChildren(...page.items.map((a) => h("tr", { dataset: { id: a.address } },
    h("td", { text: a.address }), h("td", { title: a.role_reason, text: a.role }),
    h("td", { text: [a.vendor || a.mac_vendor, a.product].filter(Boolean).join(" / ") }),
    h("td", { text: [...new Set([...Object.keys(a.client_protocols), ...Object.keys(a.server_protocols)])].join(", ") }),
    h("td", { text: fmtNum(a.events) }), h("td", { text: a.alerts || "" }))));
  const c = chart("chart-graph");
  if (!c) return;
  const roles = [...new Set(g.nodes.map((n) => n.role))];
  c.setOption({
    animation: false,
    tooltip: { formatter: (p) => (p.dataType === "edge" ? `${p.data.source} → ${p.data.target}: ${p.data.protocol}` + (p.data.alerts ? ` (${p.data.alerts})` : "")
      : `${p.data.name} · ${p.data.role}` + (p.data.alerts ? ` · ${p.data.alerts}` : "")) },
    legend: { data: roles, bottom: 0, type: "scroll" },
    series: [{
      type: "graph", layout: "force", roam: true, draggable: true, categories: roles.map((r) => ({ name: r, itemStyle: { color: ROLE_COLORS[r] || "#90a4ae" } })),
      force: { repulsion: 70, edgeLength: [20, 70], gravity: 0.16, friction: 0.2 }, edgeSymbol: ["none", "arrow"], edgeSymbolSize: 5,
      label: { show: g.nodes.length <= 60, fontSize: 9, position: "right" },
      data: g.nodes.map((n) => ({ name: n.id, role: n.role, alerts: n.alerts, category: roles.indexOf(n.role), symbolSize: 7 + Math.min(16, Math.sqrt(n.alerts) * 4) })),
      links: g.edges.map((e) => ({ source: e.source, target: e.target, protocol: e.protocol, alerts: e.alerts,
        lineStyle: { color: e.alerts ? "#c62828" : "#9db2c6", width: e.alerts ? 2 : 1, opacity: 0.8 } })),
    }],
  }, true);
}

async function exportCsv() {
  const r = await api(ds("/api/v1/assets/export.csv"), { raw: true });
  const blob = await r.blob();
  const a = h("a", { href: URL.createObjectURL(blob), download: `icswatch-assets-${S.dataset}.csv` });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function loadJobs() {
  const jobs = await api("/api/v1/jobs?limit=50");
  $("jobs-table").tBodies[0].replaceChildren(...jobs.items.map((j) => {
    const pct = j.state === "done" ? 100 : j.percent || 0;
    const cell = h("td", {});
    if (j.state === "done") {
      cell.append(h("button", { type: "button", class: "small", text: t("view"), onclick: () => { S.dataset = j.id; $("dataset").value = j.id; loadAll(); } }),
        h("button", { type: "button", class: "small", text: t("results"), onclick: () => downloadResults(j.id) }));
    }
    if (canWrite() && (j.state === "queued" || j.state === "running")) cell.append(h("button", { type: "button", class: "small", text: t("cancel"), onclick: async () => { await api(`/api/v1/jobs/${j.id}/cancel`, { method: "POST" }); loadJobs(); } }));
    if (canWrite()) cell.append(h("button", { type: "button", class: "small danger", text: t("delete"), onclick: async () => { await api(`/api/v1/jobs/${j.id}`, { method: "DELETE" }); if (S.dataset === j.id) S.dataset = "live"; loadAll(); } }));
    return h("tr", { dataset: { id: j.id } }, h("td", { title: j.id, text: j.label }), h("td", { title: j.error || j.warning || "", text: t(j.state) }),
      h("td", {}, h("span", { class: "progress" }, h("span", { style: `width:${pct}%` })), " ", j.percent === null && j.state !== "done" ? "…" : `${Math.round(pct)}%`),
      h("td", { text: fmtNum(j.packets) }), h("td", { text: fmtNum(j.alerts) }), cell);
  }));
  const busy = jobs.items.some((j) => j.state === "queued" || j.state === "running");
  clearTimeout(S.jobsTimer);
  if (busy) S.jobsTimer = setTimeout(() => loadJobs().then(loadDatasets), 1500);
}

async function downloadResults(id) {
  const r = await api(`/api/v1/jobs/${id}/results`, { raw: true });
  const blob = await r.blob();
  const a = h("a", { href: URL.createObjectURL(blob), download: `icswatch-${id}-results.json` });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function upload(ev) {
  ev.preventDefault();
  const f = $("upload-file").files[0];
  if (!f) return;
  $("upload-status").textContent = t("uploading");
  try {
    const label = $("upload-label").value.trim() || f.name;
    await api("/api/v1/jobs?label=" + encodeURIComponent(label), { method: "POST", body: f, headers: { "Content-Type": "application/octet-stream" } });
    $("upload-status").textContent = "";
  } catch (e) {
    $("upload-status").textContent = e.message;
  }
  loadJobs();
}

async function loadRules() {
  const rules = await api("/api/v1/rules");
  $("rules-total").textContent = `(${rules.enabled} / ${rules.total})`;
  const admin = S.me && S.me.role === "admin";
  $("rules-table").tBodies[0].replaceChildren(...rules.items.map((r) => h("tr", { dataset: { id: r.id } },
    h("td", { title: r.title, text: r.id }), h("td", {}, sevBadge(r.severity)), h("td", { text: r.techniques.join(", ") }),
    h("td", { text: r.alerts || "" }),
    h("td", {}, admin ? h("button", { type: "button", class: "small", text: r.enabled ? t("disable") : t("enable"),
      onclick: async () => { await api(`/api/v1/rules/${r.id}/${r.enabled ? "disable" : "enable"}`, { method: "POST" }); loadRules(); } })
      : (r.enabled ? t("yes") : t("no"))))));
}

// --- wiring --------------------------------------------------------------------------------------
function init() {
  applyLang();
  $("lang").addEventListener("click", () => {
    S.lang = S.lang === "zh" ? "en" : "zh";
    localStorage.setItem("icswatch.lang", S.lang);
    applyLang();
    if (S.me) loadAll();
  });
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    S.token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem("icswatch.token", S.token);
    signIn();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("alert-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadAlerts(true); });
  $("f-reset").addEventListener("click", () => { $("alert-filters").reset(); loadAlerts(true); });
  $("alerts-more").addEventListener("click", () => loadAlerts(false));
  $("dataset").addEventListener("change", () => { S.dataset = $("dataset").value; loadAll(); });
  $("assets-csv").addEventListener("click", exportCsv);
  $("upload-form").addEventListener("submit", upload);
  $("rules-reload").addEventListener("click", async () => { await api("/api/v1/rules/reload", { method: "POST" }); loadRules(); });
  window.addEventListener("resize", () => Object.values(S.charts).forEach((c) => c.resize()));
  if (S.token) signIn(); else signOut("");
}

init();
