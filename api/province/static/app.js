// Province dashboard: plain JavaScript, no build step. Charts: the vendored Apache ECharts
// (/vendor/echarts.min.js). Data: /api/v1/situation, /api/v1/advisories with an analyst's bearer token,
// kept in sessionStorage (this tab only); a link ending in #token=... logs in and the fragment is
// removed at once (a fragment never reaches the server or its logs).
"use strict";

const I18N = {
  zh: {
    title: "省级工业互联网安全态势", range: "时间范围", range_1d: "近 1 天", range_7d: "近 7 天", range_30d: "近 30 天",
    range_1y: "近 1 年", refresh: "刷新", logout: "退出", login_title: "请输入分析员令牌",
    login_hint: "令牌由平台管理员通过 icswatch province token issue 签发，仅保存在本标签页。", login: "登录",
    kpi_incidents: "事件总数", kpi_open: "未结事件", kpi_late: "迟报", kpi_mandatory: "须报告（较大及以上）",
    kpi_enterprises: "涉及企业", kpi_cii: "关键信息基础设施",
    chart_timeline: "事件趋势（按级别）", chart_level: "事件级别", chart_city: "地市分布", chart_industry: "行业分布",
    chart_protocol: "协议", chart_technique: "ATT&CK 技术", chart_asset: "受影响资产类型",
    late_title: "迟报事件", open_title: "未结事件", adv_title: "预警通报与确认",
    col_enterprise: "企业", col_title: "事件", col_level: "级别", col_deadline: "报告时限", col_received: "接收时间",
    col_city: "地市", col_status: "状态", col_issued: "发布时间", col_kind: "类型", col_adv_title: "标题", col_acks: "已确认 / 接收企业",
    footer: "数据来自各企业 icswatch 传感器的签名上报；时间为 UTC。", none: "暂无", loading: "加载中…",
    updated: "更新于", bad_token: "令牌无效或已过期", failed: "加载失败", incidents: "事件",
    levels: { 1: "特别重大", 2: "重大", 3: "较大", 4: "一般" },
    statuses: { open: "未处置", handling: "处置中", contained: "已控制", resolved: "已解决", closed: "已关闭" },
    kinds: { warning: "预警", notice: "通报" },
    assets: { plc: "PLC", rtu: "RTU", ied: "IED", hmi: "HMI", engineering_station: "工程师站", server: "服务器",
      field_device: "现场设备", master: "主站", unknown: "未知" },
    lang_button: "English",
  },
  en: {
    title: "Provincial industrial internet security situation", range: "Period", range_1d: "Last day",
    range_7d: "Last 7 days", range_30d: "Last 30 days", range_1y: "Last year", refresh: "Refresh", logout: "Log out",
    login_title: "Analyst token", login_hint: "Issued by the platform admin with icswatch province token issue; kept in this tab only.",
    login: "Log in", kpi_incidents: "Incidents", kpi_open: "Open", kpi_late: "Reported late",
    kpi_mandatory: "Mandatory (larger and above)", kpi_enterprises: "Enterprises affected", kpi_cii: "Critical infrastructure",
    chart_timeline: "Incidents over time (by level)", chart_level: "Levels", chart_city: "By city", chart_industry: "By industry",
    chart_protocol: "Protocols", chart_technique: "ATT&CK techniques", chart_asset: "Affected asset types",
    late_title: "Late reports", open_title: "Open incidents", adv_title: "Advisories and acknowledgements",
    col_enterprise: "Enterprise", col_title: "Incident", col_level: "Level", col_deadline: "Deadline", col_received: "Received",
    col_city: "City", col_status: "Status", col_issued: "Issued", col_kind: "Kind", col_adv_title: "Title", col_acks: "Acknowledged / recipients",
    footer: "Signed reports from the enterprises' icswatch sensors; times in UTC.", none: "None", loading: "Loading…",
    updated: "Updated", bad_token: "Invalid or expired token", failed: "Loading failed", incidents: "incidents",
    levels: { 1: "Especially major (I)", 2: "Major (II)", 3: "Larger (III)", 4: "General (IV)" },
    statuses: { open: "open", handling: "handling", contained: "contained", resolved: "resolved", closed: "closed" },
    kinds: { warning: "warning", notice: "notice" },
    assets: { plc: "PLC", rtu: "RTU", ied: "IED", hmi: "HMI", engineering_station: "Engineering station", server: "Server",
      field_device: "Field device", master: "Master", unknown: "Unknown" },
    lang_button: "中文",
  },
};
const LEVEL_COLORS = { 1: "#ff4d4f", 2: "#ff9f43", 3: "#ffd166", 4: "#7fb3ff" };
const TOKEN_KEY = "icswatch.province.token";
const LANG_KEY = "icswatch.province.lang";

const state = { lang: "zh", data: null, advisories: null, charts: {} };
const $ = (id) => document.getElementById(id);
const t = (key) => I18N[state.lang][key] ?? key;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function takeTokenFromFragment() {
  const m = location.hash.match(/token=([A-Za-z0-9_\-]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
  if (resp.status === 401) { const e = new Error(t("bad_token")); e.auth = true; throw e; }
  if (!resp.ok) throw new Error(`${t("failed")}: ${resp.status}`);
  return resp.json();
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.body.dataset.lang = state.lang;
  document.title = t("title") + " · icswatch";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = t("lang_button");
  if (state.data) render();
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
const time = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") : "–");
const level = (n) => `<span class="lv lv${n}">${esc(t("levels")[n] || n)}</span>`;

function chart(id) {
  if (!state.charts[id]) state.charts[id] = echarts.init($(id), "dark", { renderer: "canvas" });
  return state.charts[id];
}

const BASE = { backgroundColor: "transparent", textStyle: { fontFamily: "inherit" }, tooltip: { trigger: "item" } };

function bar(id, rows, label = (k) => k) {
  const data = rows.slice(0, 10).reverse();
  chart(id).setOption({
    ...BASE,
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    grid: { left: 8, right: 24, top: 8, bottom: 8, containLabel: true },
    xAxis: { type: "value", minInterval: 1, splitLine: { lineStyle: { color: "#26385a" } } },
    yAxis: { type: "category", data: data.map((r) => label(r.key)) },
    series: [{ type: "bar", data: data.map((r) => r.count), itemStyle: { color: "#3ea6ff" }, barMaxWidth: 18,
      label: { show: true, position: "right", color: "#e6edf7" } }],
  }, true);
}

function pie(id, rows, label, color) {
  chart(id).setOption({
    ...BASE,
    legend: { bottom: 0, textStyle: { color: "#8fa3c0" } },
    series: [{ type: "pie", radius: ["42%", "68%"], center: ["50%", "44%"],
      label: { color: "#e6edf7", formatter: "{b}: {c}" },
      data: rows.map((r) => ({ name: label(r.key), value: r.count, itemStyle: color ? { color: color(r.key) } : undefined })) }],
  }, true);
}

function timeline(rows) {
  const buckets = [...new Set(rows.map((r) => r.bucket_start))].sort();
  const series = [1, 2, 3, 4].map((lv) => ({
    name: t("levels")[lv], type: "bar", stack: "lv", barMaxWidth: 48, itemStyle: { color: LEVEL_COLORS[lv] },
    data: buckets.map((b) => (rows.find((r) => r.bucket_start === b && r.level === lv) || { count: 0 }).count),
  }));
  chart("chart-timeline").setOption({
    ...BASE,
    tooltip: { trigger: "axis" },
    legend: { top: 0, textStyle: { color: "#8fa3c0" } },
    grid: { left: 8, right: 16, top: 30, bottom: 8, containLabel: true },
    xAxis: { type: "category", data: buckets.map((b) => (state.data.interval >= 86400 ? b.slice(0, 10) : time(b).slice(0, 16))) },
    yAxis: { type: "value", minInterval: 1, splitLine: { lineStyle: { color: "#26385a" } } },
    series,
  }, true);
}

function rowsOrEmpty(rows, cols) {
  return rows.length ? rows.join("") : `<tr><td class="empty" colspan="${cols}">${esc(t("none"))}</td></tr>`;
}

function render() {
  const d = state.data;
  const tot = d.totals;
  for (const k of ["incidents", "open", "late", "mandatory", "enterprises", "cii"]) $("kpi-" + k).textContent = tot[k];
  timeline(d.timeline);
  pie("chart-level", d.by_level, (k) => t("levels")[k] || k, (k) => LEVEL_COLORS[k]);
  bar("chart-city", d.by_city);
  bar("chart-industry", d.by_industry);
  bar("chart-protocol", d.by_protocol);
  bar("chart-technique", d.by_technique);
  pie("chart-asset", d.by_asset_type, (k) => t("assets")[k] || k);
  $("late-table").tBodies[0].innerHTML = rowsOrEmpty(d.late_reports.map((r) =>
    `<tr><td class="nowrap">${esc(r.enterprise_id)}</td><td>${esc(r.title)}</td><td class="nowrap">${level(r.level)}</td>` +
    `<td class="late nowrap">${esc(time(r.deadline))}</td><td>${esc(time(r.received_at))}</td></tr>`), 5);
  $("open-table").tBodies[0].innerHTML = rowsOrEmpty(d.open_reports.map((r) =>
    `<tr><td class="nowrap">${esc(r.enterprise_id)}</td><td>${esc(r.title)}</td><td class="nowrap">${level(r.level)}</td>` +
    `<td class="nowrap">${esc(r.city)}</td><td class="nowrap">${esc(t("statuses")[r.status] || r.status)}</td></tr>`), 5);
  const adv = (state.advisories && state.advisories.items) || [];
  $("adv-table").tBodies[0].innerHTML = rowsOrEmpty(adv.map((a) =>
    `<tr><td>${esc(time(a.issued_at))}</td><td>${esc(a.title)}</td><td>${esc(t("kinds")[a.kind] || a.kind)}</td>` +
    `<td>${a.acknowledged} / ${a.recipients}</td></tr>`), 4);
  $("generated").textContent = `${t("updated")} ${time(d.generated_at)}`;
}

async function load() {
  const days = Number($("range").value);
  const since = new Date(Date.now() - days * 86400e3).toISOString().replace(/\.\d+Z$/, "Z");
  const interval = days <= 1 ? 3600 : 86400;
  $("status").textContent = t("loading");
  $("status").className = "status";
  try {
    const [sit, adv] = await Promise.all([
      api(`/api/v1/situation?since=${encodeURIComponent(since)}&interval=${interval}&top=10`),
      api("/api/v1/advisories?limit=20"),
    ]);
    state.data = sit;
    state.advisories = adv;
    render();
    $("status").textContent = "";
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = e.message;
    $("status").className = "status error";
    if (e.auth) showLogin(e.message);
  }
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function start() {
  // ?lang=zh|en, else the last choice, else the browser's language.
  const asked = new URLSearchParams(location.search).get("lang") || localStorage.getItem(LANG_KEY);
  state.lang = asked === "zh" || asked === "en" ? asked : (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
  takeTokenFromFragment();
  applyLang();
  $("lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, state.lang);
    applyLang();
  });
  $("refresh").addEventListener("click", load);
  $("range").addEventListener("change", load);
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(""); });
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("login").hidden = true;
    $("main").hidden = false;
    load();
  });
  window.addEventListener("resize", () => Object.values(state.charts).forEach((c) => c.resize()));
  if (!token()) { showLogin(""); return; }
  load();
  setInterval(() => { if (token() && !document.hidden) load(); }, 60000);
}

document.addEventListener("DOMContentLoaded", start);
