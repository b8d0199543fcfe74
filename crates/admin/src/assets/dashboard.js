'use strict';
// The usage dashboard: APIM's reports and the quota counters from this gateway's admin API,
// as sortable tables and bar charts. Every value is written with textContent (ids and names
// are operator input); the admin key stays in this page's memory and goes only into the
// Authorization header of requests to this origin.
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const BUCKETS = ['Success', 'Blocked', 'Failed', 'Other'];
  const NUMBERS = [
    ['callCountTotal', 'Calls'], ['callCountSuccess', 'Success'], ['callCountBlocked', 'Blocked'],
    ['callCountFailed', 'Failed'], ['callCountOther', 'Other'], ['bandwidth', 'Bytes'],
    ['apiTimeAvg', 'apiTime avg ms'], ['apiTimeMin', 'min'], ['apiTimeMax', 'max'],
    ['serviceTimeAvg', 'serviceTime avg ms'], ['serviceTimeMin', 'min'], ['serviceTimeMax', 'max'],
    ['promptTokens', 'Prompt tokens'], ['completionTokens', 'Completion tokens'], ['totalTokens', 'Tokens'],
  ];
  const strip = (prefix) => (v) => (v || '').slice(prefix.length);
  const REPORTS = {
    byApi: { cols: [['name', 'API'], ['apiId', 'id', strip('/apis/')]], chart: true },
    byOperation: {
      cols: [['apiId', 'API', strip('/apis/')], ['name', 'Operation'],
        ['operationId', 'id', (v) => (v || '').split('/operations/').pop()]],
      chart: true,
    },
    byProduct: { cols: [['name', 'Product'], ['productId', 'id', strip('/products/')]] },
    bySubscription: { cols: [['name', 'Subscription'], ['productId', 'Product', strip('/products/')]] },
  };
  let key = '';

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmt(k, v) {
    if (typeof v !== 'number') return v === null || v === undefined ? '' : String(v);
    return /Time/.test(k) ? v.toFixed(2) : String(v);
  }

  async function get(path) {
    const r = await fetch(path, { headers: { Authorization: 'Bearer ' + key }, cache: 'no-store' });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    return { status: r.status, body };
  }

  // A table whose column headers sort it (numbers numerically, text alphabetically).
  function table(cols, rows, id) {
    const t = el('table');
    t.id = id;
    const head = el('tr');
    const body = el('tbody');
    let sortKey = null;
    let dir = 1;
    function fill() {
      const sorted = rows.slice();
      if (sortKey !== null) {
        sorted.sort((a, b) => {
          const x = a[sortKey];
          const y = b[sortKey];
          const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
          return c * dir;
        });
      }
      body.replaceChildren();
      for (const r of sorted) {
        const tr = el('tr');
        for (const [k, , show] of cols) {
          const td = el('td', show ? show(r[k]) : fmt(k, r[k]), typeof r[k] === 'number' ? '' : 'text');
          td.dataset.key = k;
          tr.append(td);
        }
        body.append(tr);
      }
    }
    for (const [k, label] of cols) {
      const th = el('th');
      const b = el('button', label);
      b.type = 'button';
      b.dataset.key = k;
      b.addEventListener('click', () => {
        dir = sortKey === k ? -dir : (rows.length && typeof rows[0][k] === 'number' ? -1 : 1);
        sortKey = k;
        for (const other of head.children) other.removeAttribute('aria-sort');
        th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        fill();
      });
      th.append(b);
      head.append(th);
    }
    const thead = el('thead');
    thead.append(head);
    t.append(thead, body);
    fill();
    return t;
  }

  // Stacked bars of each record's calls by outcome.
  function chart(records, label) {
    const wrap = el('div');
    const legend = el('p', null, 'legend');
    for (const b of BUCKETS) {
      legend.append(el('i', null, b.toLowerCase()), document.createTextNode(b));
    }
    const max = Math.max(1, ...records.map((r) => r.callCountTotal));
    const rowH = 22;
    const left = 260;
    const width = 900;
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${width} ${records.length * rowH + 4}`);
    svg.setAttribute('role', 'img');
    records.forEach((r, i) => {
      const y = i * rowH + 2;
      const name = document.createElementNS(SVG, 'text');
      name.setAttribute('x', '0');
      name.setAttribute('y', String(y + 15));
      name.textContent = label(r);
      svg.append(name);
      let x = left;
      for (const b of BUCKETS) {
        const n = r['callCount' + b];
        if (!n) continue;
        const w = ((width - left - 60) * n) / max;
        const rect = document.createElementNS(SVG, 'rect');
        rect.setAttribute('x', String(x));
        rect.setAttribute('y', String(y));
        rect.setAttribute('width', String(Math.max(w, 1)));
        rect.setAttribute('height', String(rowH - 6));
        rect.setAttribute('class', b.toLowerCase());
        const title = document.createElementNS(SVG, 'title');
        title.textContent = `${label(r)}: ${n} ${b.toLowerCase()}`;
        rect.append(title);
        svg.append(rect);
        x += w;
      }
      const total = document.createElementNS(SVG, 'text');
      total.setAttribute('x', String(x + 6));
      total.setAttribute('y', String(y + 15));
      total.textContent = String(r.callCountTotal);
      svg.append(total);
    });
    wrap.append(legend, svg);
    return wrap;
  }

  function showReport(name, res) {
    const spec = REPORTS[name];
    const sec = $(name);
    const place = sec.querySelector('.table');
    if (res.status !== 200 || !res.body || !Array.isArray(res.body.value)) {
      const msg = res.body && res.body.error ? res.body.error.message : `HTTP ${res.status}`;
      place.replaceChildren(el('p', msg, 'muted'));
      if (spec.chart) sec.querySelector('.chart').replaceChildren();
      return;
    }
    const rows = res.body.value;
    place.replaceChildren(table(spec.cols.concat(NUMBERS), rows, name + '-table'));
    if (spec.chart) {
      const label = name === 'byApi' ? (r) => r.name : (r) => `${strip('/apis/')(r.apiId)} / ${r.name}`;
      sec.querySelector('.chart').replaceChildren(chart(rows, label));
    }
  }

  function showQuotas(res) {
    const place = $('quotas').querySelector('.table');
    if (res.status !== 200 || !res.body || !Array.isArray(res.body.value)) {
      place.replaceChildren(el('p', `HTTP ${res.status}`, 'muted'));
      return;
    }
    const byProduct = new Map();
    for (const q of res.body.value) {
      if (!byProduct.has(q.productId)) byProduct.set(q.productId, []);
      byProduct.get(q.productId).push(q);
    }
    const out = [];
    if (byProduct.size === 0) out.push(el('p', 'No product has a quota.', 'muted'));
    for (const [productId, counters] of byProduct) {
      const first = counters[0];
      const used = counters.reduce((s, q) => s + q.value.callsCount, 0);
      const h = el('h3', `${first.productName} (${strip('/products/')(productId)})`);
      const limit = first.callsLimit === null ? 'no call limit' : `${first.callsLimit} calls`;
      const kb = first.kbLimit === null ? '' : `, ${first.kbLimit} KB`;
      const summary = el('p', `Quota per subscription: ${limit}${kb} per period. Calls this period, all subscriptions: ${used}.`, 'muted');
      const rows = counters.map((q) => ({
        subscription: strip('/subscriptions/')(q.subscriptionId),
        callsCount: q.value.callsCount,
        callsLimit: q.callsLimit === null ? '' : q.callsLimit,
        kbTransferred: Math.round(q.value.kbTransferred * 100) / 100,
        kbLimit: q.kbLimit === null ? '' : q.kbLimit,
        periodEndTime: q.periodEndTime,
      }));
      const cols = [['subscription', 'Subscription'], ['callsCount', 'Calls'], ['callsLimit', 'Limit'],
        ['kbTransferred', 'KB'], ['kbLimit', 'KB limit'], ['periodEndTime', 'Period ends']];
      const t = table(cols, rows, 'quota-' + strip('/products/')(productId));
      // A bar of the call quota used, per subscription.
      t.querySelectorAll('tbody tr').forEach((tr) => {
        const sub = tr.querySelector('td[data-key=subscription]').textContent;
        const q = counters.find((c) => strip('/subscriptions/')(c.subscriptionId) === sub);
        const td = el('td');
        if (q && q.callsLimit) {
          const p = el('progress');
          p.max = q.callsLimit;
          p.value = Math.min(q.value.callsCount, q.callsLimit);
          p.title = `${Math.round((100 * q.value.callsCount) / q.callsLimit)}% of the call quota`;
          td.append(p);
        }
        tr.append(td);
      });
      t.querySelector('thead tr').append(el('th', 'Use'));
      out.push(h, summary, t);
    }
    place.replaceChildren(...out);
  }

  async function load() {
    const status = $('status');
    status.className = '';
    status.textContent = 'Loading…';
    try {
      const first = await get('reports/byApi');
      if (first.status === 401) {
        $('main').hidden = true;
        status.className = 'error';
        status.textContent = 'The admin key was refused (401).';
        return;
      }
      showReport('byApi', first);
      for (const name of ['byOperation', 'byProduct', 'bySubscription']) {
        showReport(name, await get('reports/' + name));
      }
      showQuotas(await get('quotas'));
      $('main').hidden = false;
      $('refresh').disabled = false;
      status.textContent = 'Loaded ' + new Date().toLocaleTimeString() + '.';
    } catch (e) {
      status.className = 'error';
      status.textContent = 'Could not load the reports: ' + e;
    }
  }

  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    key = $('key').value.trim();
    $('key').value = '';
    load();
  });
  $('refresh').addEventListener('click', load);
})();
