// mlgate developer portal. Hand-written, no framework, no build. Everything it shows comes
// from the gateway's JSON (apis.json, each API's openapi.json, subscription) and is put into
// the page as text nodes (el() below): no innerHTML, no inline handlers, so a name an
// operator wrote is always shown as text. The page's Content-Security-Policy allows this
// file and portal.css only, and requests to this origin only.
'use strict';
(function () {
  var BASE = document.documentElement.getAttribute('data-base') || '';
  var main = document.getElementById('main');
  var catalog = null;
  var specs = {};
  // The key the developer typed (Try it, My subscription): in memory only, never stored.
  var memoryKey = '';

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'on') Object.keys(v).forEach(function (ev) { e.addEventListener(ev, v[ev]); });
        else e.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(parent, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { add(parent, k); }); return; }
    parent.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  function show() {
    main.replaceChildren();
    for (var i = 0; i < arguments.length; i++) add(main, arguments[i]);
    window.scrollTo(0, 0);
  }
  function link(text, hash, attrs) { return el('a', Object.assign({ href: hash }, attrs || {}), text); }
  function apiHash(api) { return '#/apis/' + encodeURIComponent(api.id); }
  function opHash(api, op) { return apiHash(api) + '/operations/' + encodeURIComponent(op.id); }
  function table(head, rows, attrs) {
    return el('table', attrs || null,
      el('thead', null, el('tr', null, head.map(function (h) { return el('th', null, h); }))),
      el('tbody', null, rows.map(function (r) { return el('tr', null, r.map(function (c) { return el('td', null, c); })); })));
  }
  function code(text, attrs) { return el('pre', attrs || null, el('code', null, text)); }
  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }
  function fail(what, err) {
    show(el('h1', null, 'Something went wrong'), el('p', { class: 'error' }, what + ': ' + (err && err.message ? err.message : err)));
  }

  function getJSON(url) {
    return fetch(url, { credentials: 'omit', cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error(url + ' answered ' + r.status);
      return r.json();
    });
  }
  function loadCatalog() {
    return catalog ? Promise.resolve(catalog) : getJSON(BASE + '/apis.json').then(function (c) { catalog = c; return c; });
  }
  function loadSpec(api) {
    return specs[api.id] ? Promise.resolve(specs[api.id])
      : getJSON(api.openapi).then(function (s) { specs[api.id] = s; return s; });
  }

  var PERIODS = { hourly: 'hour', daily: 'day', weekly: 'week', monthly: 'month', yearly: 'year' };
  // 60 -> "minute", 604800 -> "week", 90 -> "90 seconds".
  function period(s) {
    var units = [[604800, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
    for (var i = 0; i < units.length; i++) {
      var n = s / units[i][0];
      if (n >= 1 && n === Math.floor(n)) return n === 1 ? units[i][1] : n + ' ' + units[i][1] + 's';
    }
    return s + ' seconds';
  }
  function limitText(l) {
    if (l.kind === 'token-limit') {
      var t = [];
      if (l.tokensPerMinute !== null) t.push(l.tokensPerMinute + ' tokens per minute');
      if (l.tokenQuota !== null) t.push(l.tokenQuota + ' tokens per ' + PERIODS[l.tokenQuotaPeriod]);
      return 'token limit: ' + t.join(' and ');
    }
    var per = period(l.renewalPeriod);
    if (l.kind === 'quota') {
      var parts = [];
      if (l.calls !== null && l.calls !== undefined) parts.push(l.calls + ' calls');
      if (l.bandwidthKb !== null && l.bandwidthKb !== undefined) parts.push(l.bandwidthKb + ' KB');
      // renewal_period 0: APIM's lifetime quota, which never renews.
      return 'quota: ' + parts.join(' and ') + (l.renewalPeriod === 0 ? ' for the lifetime of the subscription' : ' per ' + per);
    }
    var by = l.counter && l.counter !== 'subscription' ? ' per ' + l.counter : '';
    return 'rate limit: ' + l.calls + ' calls per ' + per + by;
  }
  function productsList(api) {
    if (!api.products.length) return el('span', { class: 'muted' }, 'in no product');
    return el('ul', null, api.products.map(function (p) {
      var limits = p.limits.map(limitText).join('; ');
      return el('li', null, el('strong', null, p.name), p.description ? ' \u2014 ' + p.description : '',
        el('span', { class: 'muted' }, limits ? ' (' + limits + ')' : ' (no limits)'));
    }));
  }

  // --- views ---------------------------------------------------------------------------------
  function viewApis() {
    loadCatalog().then(function (c) {
      show(el('h1', null, 'APIs'),
        c.apis.map(function (api) {
          return el('div', { class: 'card', 'data-api': api.id },
            el('h2', null, link(api.name, apiHash(api))),
            api.description ? el('p', null, api.description) : null,
            el('dl', { class: 'facts' },
              el('dt', null, 'Base URL'), el('dd', null, el('code', { class: 'url' }, api.baseUrl || api.path || '/')),
              el('dt', null, 'Operations'), el('dd', null, String(api.operations.length)),
              el('dt', null, 'Products'), el('dd', null, productsList(api))));
        }));
    }).catch(function (e) { fail('Loading the APIs', e); });
  }

  function findApi(c, id) { return c.apis.filter(function (a) { return a.id === id; })[0]; }

  function viewApi(id) {
    loadCatalog().then(function (c) {
      var api = findApi(c, id);
      if (!api) return show(el('h1', null, 'No such API'), link('All APIs', '#/'));
      show(el('p', null, link('APIs', '#/'), ' / '),
        el('h1', null, api.name),
        api.description ? el('p', null, api.description) : null,
        el('dl', { class: 'facts' },
          el('dt', null, 'Base URL'), el('dd', null, el('code', { class: 'url' }, api.baseUrl || api.path || '/')),
          el('dt', null, 'Subscription key'), el('dd', null, 'header ', el('code', null, api.subscriptionKeyHeader),
            ' or query parameter ', el('code', null, api.subscriptionKeyQuery)),
          el('dt', null, 'API definition'), el('dd', null, el('a', { href: api.openapi, download: api.id + '.openapi.json', id: 'openapi-link' }, 'OpenAPI 3.0.1 (JSON)')),
          el('dt', null, 'Products'), el('dd', null, productsList(api)),
          api.limits.length ? [el('dt', null, 'API limits'), el('dd', null, api.limits.map(limitText).join('; '))] : null),
        el('h2', null, 'Operations'),
        table(['Method', 'Operation', 'URL template'], api.operations.map(function (op) {
          return [el('span', { class: 'method ' + op.method }, op.method), link(op.name, opHash(api, op)), el('code', { class: 'url' }, op.urlTemplate)];
        }), { id: 'operations' }));
    }).catch(function (e) { fail('Loading the API', e); });
  }

  // The OpenAPI operation object with this operationId, and its path key.
  function findOperation(spec, opId) {
    var found = null;
    ['paths', 'x-ms-paths'].forEach(function (section) {
      var paths = spec[section] || {};
      Object.keys(paths).forEach(function (p) {
        Object.keys(paths[p]).forEach(function (m) {
          if (!found && paths[p][m] && paths[p][m].operationId === opId) found = { path: p, method: m.toUpperCase(), op: paths[p][m] };
        });
      });
    });
    return found;
  }
  function schemaText(s) {
    if (!s) return '';
    if (s.$ref) return s.$ref.split('/').pop();
    if (s.anyOf) return s.anyOf.map(schemaText).join(' or ');
    return s.type || 'object';
  }
  function exampleOf(content) {
    if (!content) return undefined;
    if (content.example !== undefined) return content.example;
    var ex = content.examples || {};
    var k = Object.keys(ex)[0];
    return k === undefined ? undefined : ex[k].value;
  }

  function viewOperation(apiId, opId, openTry) {
    loadCatalog().then(function (c) {
      var api = findApi(c, apiId);
      if (!api) return show(el('h1', null, 'No such API'), link('All APIs', '#/'));
      var entry = api.operations.filter(function (o) { return o.id === opId; })[0];
      if (!entry) return show(el('h1', null, 'No such operation'), link(api.name, apiHash(api)));
      return loadSpec(api).then(function (spec) { renderOperation(api, entry, spec, openTry); });
    }).catch(function (e) { fail('Loading the operation', e); });
  }

  function renderOperation(api, entry, spec, openTry) {
    var found = findOperation(spec, entry.id);
    var op = found ? found.op : { parameters: [], responses: {} };
    var params = op.parameters || [];
    var body = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
    var bodyExample = exampleOf(body);
    var requestUrl = (api.baseUrl || api.path) + entry.urlTemplate;
    var headers = [[el('code', null, api.subscriptionKeyHeader), 'header', 'yes', 'string',
      'Your subscription key (see My subscription). The gateway checks it and removes it before the backend.']];
    if (body) headers.push([el('code', null, 'Content-Type'), 'header', 'yes', 'string', 'application/json']);

    var responses = Object.keys(op.responses || {}).map(function (status) {
      var r = op.responses[status];
      var content = r.content && r.content['application/json'];
      var examples = [];
      if (content && content.example !== undefined) examples.push(content.example);
      if (content && content.examples) Object.keys(content.examples).forEach(function (k) { examples.push(content.examples[k].value); });
      return el('div', { class: 'response', 'data-status': status },
        el('h3', null, status === 'default' ? 'Other statuses' : status, ' ', el('span', { class: 'muted' }, r.description || '')),
        r.headers ? el('p', null, 'Headers: ', Object.keys(r.headers).map(function (h) { return el('code', null, h); })) : null,
        content ? el('p', null, 'application/json: ', el('code', null, schemaText(content.schema))) : null,
        examples.map(function (ex) { return code(JSON.stringify(ex, null, 2)); }));
    });

    var tryPanel = el('div', { id: 'try-panel' });
    // An AzureML Studio web service (its export has the Studio schemas): the note says which key.
    var studio = !!((spec.components || {}).schemas || {}).ExecutionRequest;
    show(el('p', null, link('APIs', '#/'), ' / ', link(api.name, apiHash(api)), ' / '),
      el('h1', { id: 'operation-name' }, entry.name),
      entry.description ? el('p', null, entry.description) : null,
      el('p', null, el('button', { id: 'try-it', type: 'button', on: { click: function () { openTryIt(tryPanel, api, entry, params, body, bodyExample, studio); } } }, 'Try it')),
      tryPanel,
      el('h2', null, 'Request'),
      el('p', null, el('span', { class: 'method ' + entry.method }, entry.method), ' ', el('code', { class: 'url', id: 'request-url' }, requestUrl)),
      el('h3', null, 'Request parameters'),
      params.length ? table(['Name', 'In', 'Required', 'Type', 'Description'], params.map(function (p) {
        var s = p.schema || {};
        var fixed = s.enum && s.enum.length === 1 ? ' Fixed: ' + s.enum[0] + '.' : s.enum ? ' One of: ' + s.enum.join(', ') + '.' : '';
        return [el('code', null, p.name), p.in, p.required ? 'yes' : 'no', s.type || 'string', (p.description || '') + fixed];
      }), { id: 'parameters' }) : el('p', { class: 'muted' }, 'None.'),
      el('h3', null, 'Request headers'),
      table(['Name', 'In', 'Required', 'Type', 'Description'], headers, { id: 'headers' }),
      el('h3', null, 'Request body'),
      body ? [el('p', null, 'application/json: ', el('code', null, schemaText(body.schema))),
        bodyExample !== undefined ? code(JSON.stringify(bodyExample, null, 2)) : null] : el('p', { class: 'muted' }, 'None.'),
      el('h2', null, 'Responses'),
      responses,
      el('h2', null, 'Code samples'),
      samples(api, entry, params, bodyExample));
    if (openTry) openTryIt(tryPanel, api, entry, params, body, bodyExample, studio);
  }

  // The request URL of a template with values filled in (path and query, encoded).
  function fillTemplate(template, values) {
    var q = template.indexOf('?');
    var path = q < 0 ? template : template.slice(0, q);
    var query = q < 0 ? '' : template.slice(q + 1);
    path = path.replace(/\{([A-Za-z0-9_-]+)\}/g, function (_, n) { return encodeURIComponent(values[n] !== undefined ? values[n] : ''); });
    if (query) {
      query = query.split('&').map(function (pair) {
        var i = pair.indexOf('=');
        var name = pair.slice(0, i), value = pair.slice(i + 1);
        var m = /^\{([A-Za-z0-9_-]+)\}$/.exec(value);
        var v = m ? (values[name] !== undefined ? values[name] : '') : value;
        return encodeURIComponent(name) + '=' + encodeURIComponent(v);
      }).join('&');
    }
    return path + (query ? '?' + query : '');
  }
  function defaults(params) {
    var v = {};
    params.forEach(function (p) { var s = p.schema || {}; v[p.name] = s.default !== undefined ? s.default : '{' + p.name + '}'; });
    return v;
  }

  function samples(api, entry, params, bodyExample) {
    var url = (api.baseUrl || api.path) + fillTemplate(entry.urlTemplate, defaults(params));
    var bodyText = bodyExample !== undefined ? JSON.stringify(bodyExample) : null;
    var curl = 'curl -X ' + entry.method + " '" + url + "' \\\n  -H '" + api.subscriptionKeyHeader + ": {subscription key}'";
    if (bodyText !== null) curl += " \\\n  -H 'Content-Type: application/json' \\\n  --data-raw '" + bodyText.replace(/'/g, "'\\''") + "'";
    var py = 'import urllib.request\n\n' +
      'url = ' + JSON.stringify(url) + '\n' +
      'headers = {' + JSON.stringify(api.subscriptionKeyHeader) + ': "{subscription key}"' + (bodyText !== null ? ', "Content-Type": "application/json"' : '') + '}\n' +
      (bodyText !== null ? 'body = ' + JSON.stringify(bodyText) + '.encode()\n' : 'body = None\n') +
      'request = urllib.request.Request(url, data=body, headers=headers, method=' + JSON.stringify(entry.method) + ')\n' +
      'with urllib.request.urlopen(request) as response:\n    print(response.status, response.read().decode())\n';
    var out = el('div', { id: 'samples' });
    var pre = code(curl, { id: 'sample-code' });
    var bCurl = el('button', { type: 'button', 'aria-pressed': 'true' }, 'curl');
    var bPy = el('button', { type: 'button', 'aria-pressed': 'false' }, 'Python');
    function pick(which) {
      pre.firstChild.textContent = which === 'py' ? py : curl;
      bCurl.setAttribute('aria-pressed', String(which !== 'py'));
      bPy.setAttribute('aria-pressed', String(which === 'py'));
    }
    bCurl.addEventListener('click', function () { pick('curl'); });
    bPy.addEventListener('click', function () { pick('py'); });
    add(out, [el('div', { class: 'tabs' }, bCurl, bPy), pre]);
    return out;
  }

  function keyInput(id, onChange) {
    var input = el('input', { id: id, type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'subscription key' });
    input.value = memoryKey;
    input.addEventListener('input', function () { memoryKey = input.value; if (onChange) onChange(); });
    var toggle = el('button', { type: 'button', class: 'secondary', id: id + '-toggle' }, 'Show');
    toggle.addEventListener('click', function () {
      var hidden = input.type === 'password';
      input.type = hidden ? 'text' : 'password';
      toggle.textContent = hidden ? 'Hide' : 'Show';
    });
    return { input: input, row: el('div', { class: 'row' }, input, toggle) };
  }

  function openTryIt(panel, api, entry, params, body, bodyExample, studio) {
    panel.replaceChildren();
    panel.className = 'panel';
    var inputs = {};
    var fields = params.map(function (p) {
      var s = p.schema || {};
      var input;
      if (s.enum && s.enum.length > 1) {
        input = el('select', { id: 'try-param-' + p.name }, s.enum.map(function (v) { return el('option', { value: v }, v); }));
        if (s.default !== undefined) input.value = s.default;
      } else {
        input = el('input', { id: 'try-param-' + p.name, type: 'text', spellcheck: 'false', readonly: !!(s.enum && s.enum.length === 1), required: p.required, 'data-in': p.in });
        input.value = s.default !== undefined ? s.default : (s.enum ? s.enum[0] : '');
      }
      inputs[p.name] = input;
      return el('div', null, el('label', { for: 'try-param-' + p.name }, p.name, ' ',
        el('span', { class: 'muted' }, '(' + p.in + (p.required ? ', required' : '') + (s.enum && s.enum.length === 1 ? ', fixed' : '') + ')')), input);
    });
    var key = keyInput('try-key');
    var headersBox = el('textarea', { id: 'try-headers', class: 'headers', spellcheck: 'false' });
    headersBox.value = body ? 'Content-Type: application/json' : '';
    var bodyBox = el('textarea', { id: 'try-body', spellcheck: 'false' });
    bodyBox.value = bodyExample !== undefined ? JSON.stringify(bodyExample, null, 2) : '';
    var send = el('button', { type: 'button', id: 'try-send' }, 'Send');
    var result = el('div', { id: 'try-result' });
    send.addEventListener('click', function () { sendTry(api, entry, inputs, key.input, headersBox, bodyBox, send, result); });
    add(panel, [
      el('h2', null, 'Try it'),
      el('p', { class: 'note', id: 'try-note' }, studio
        ? 'The gateway adds the backend\u2019s credentials (the AzureML API key, as Authorization: Bearer) on the way to the web service. You only need your subscription key; never the AzureML API key.'
        : 'The gateway adds the backend\u2019s credentials (its API key) on the way to the backend. You only need your subscription key; never the backend\u2019s key.'),
      el('h3', null, 'Parameters'), fields.length ? fields : el('p', { class: 'muted' }, 'None.'),
      el('h3', null, 'Headers'),
      el('label', { for: 'try-key' }, api.subscriptionKeyHeader, ' ', el('span', { class: 'muted' }, '(subscription key, sent as this header)')), key.row,
      el('label', { for: 'try-headers' }, 'Other headers ', el('span', { class: 'muted' }, '(one "Name: value" per line)')), headersBox,
      el('h3', null, 'Request body'), bodyBox,
      el('p', null, send),
      result]);
    panel.scrollIntoView();
  }

  function sendTry(api, entry, inputs, keyBox, headersBox, bodyBox, send, result) {
    var values = {};
    var missing = Object.keys(inputs).filter(function (n) { values[n] = inputs[n].value; return inputs[n].required && !values[n]; });
    if (missing.length) return result.replaceChildren(el('p', { class: 'error', id: 'try-error' }, 'Fill in ' + missing.join(', ') + '.'));
    var path = (api.path || '') + fillTemplate(entry.urlTemplate, values);
    var headers = new Headers();
    var shown = [];
    try {
      headersBox.value.split('\n').forEach(function (line) {
        var i = line.indexOf(':');
        if (!line.trim()) return;
        if (i < 1) throw new Error('not a "Name: value" header line: ' + line);
        headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
        shown.push(line.slice(0, i).trim() + ': ' + line.slice(i + 1).trim());
      });
      Object.keys(inputs).forEach(function (n) {
        if (inputs[n].getAttribute('data-in') === 'header' && values[n]) { headers.set(n, values[n]); shown.push(n + ': ' + values[n]); }
      });
      if (keyBox.value) {
        headers.set(api.subscriptionKeyHeader, keyBox.value);
        shown.unshift(api.subscriptionKeyHeader + ': ' + '\u2022'.repeat(Math.min(keyBox.value.length, 12)));
      }
    } catch (e) {
      result.replaceChildren(el('p', { class: 'error' }, e.message));
      return;
    }
    var method = entry.method;
    var init = { method: method, headers: headers, credentials: 'omit', cache: 'no-store', redirect: 'manual' };
    if (method !== 'GET' && method !== 'HEAD') init.body = bodyBox.value;
    send.disabled = true;
    result.replaceChildren(el('p', { class: 'muted' }, 'Sending\u2026'));
    var started = performance.now();
    fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var ms = Math.round(performance.now() - started);
        var respHeaders = [];
        r.headers.forEach(function (v, k) { respHeaders.push(k + ': ' + v); });
        result.replaceChildren(
          el('h3', null, 'Request URL'), code(location.origin + path, { id: 'try-url' }),
          el('h3', null, 'Request headers'), code(shown.join('\n') || '(none)', { id: 'try-request-headers' }),
          el('h3', null, 'Response status'),
          el('p', null, el('span', { id: 'try-status', class: 'status ' + (r.ok ? 'ok' : 'bad') }, String(r.status)), ' ',
            el('span', { id: 'try-status-text' }, r.statusText || ''), ' ',
            el('span', { class: 'muted' }, 'in ', el('span', { id: 'try-time' }, ms + ' ms'))),
          el('h3', null, 'Response headers'), code(respHeaders.join('\n'), { id: 'try-response-headers' }),
          el('h3', null, 'Response content'), el('div', null, resultTables(text)), code(pretty(text), { id: 'try-response-body' }));
      });
    }).catch(function (e) {
      result.replaceChildren(el('p', { class: 'error', id: 'try-error' }, 'The request failed: ' + e.message));
    }).then(function () { send.disabled = false; });
  }

  // AzureML RRS results (Results.<output>.value: ColumnNames + Values) as tables.
  function resultTables(text) {
    var data;
    try { data = JSON.parse(text); } catch (e) { return null; }
    var results = data && typeof data === 'object' ? data.Results : null;
    if (!results || typeof results !== 'object') return null;
    return Object.keys(results).map(function (name) {
      var v = results[name] && results[name].value;
      if (!v || !Array.isArray(v.ColumnNames) || !Array.isArray(v.Values)) return null;
      return el('div', { class: 'scroll' }, el('p', null, el('strong', null, name)),
        table(v.ColumnNames.map(String), v.Values.map(function (row) { return (Array.isArray(row) ? row : [row]).map(String); }),
          { class: 'results', 'data-output': name }));
    });
  }

  function viewSubscription() {
    var key = keyInput('sub-key');
    var go = el('button', { type: 'button', id: 'sub-show' }, 'Show my subscription');
    var out = el('div', { id: 'sub-result' });
    function run() {
      go.disabled = true;
      out.replaceChildren(el('p', { class: 'muted' }, 'Loading\u2026'));
      fetch(BASE + '/subscription', { headers: { 'Ocp-Apim-Subscription-Key': key.input.value }, credentials: 'omit', cache: 'no-store' })
        .then(function (r) {
          return r.text().then(function (text) {
            if (!r.ok) {
              var msg = text;
              try { msg = JSON.parse(text).message; } catch (e) { /* shown as sent */ }
              out.replaceChildren(el('p', { class: 'error' }, el('span', { id: 'sub-status' }, String(r.status)), ' ', el('span', { id: 'sub-message' }, msg)));
              return;
            }
            renderSubscription(out, JSON.parse(text));
          });
        })
        .catch(function (e) { out.replaceChildren(el('p', { class: 'error' }, e.message)); })
        .then(function () { go.disabled = false; });
    }
    go.addEventListener('click', run);
    key.input.addEventListener('keydown', function (e) { if (e.key === 'Enter') run(); });
    show(el('h1', null, 'My subscription'),
      el('p', null, 'Enter a subscription key to see its subscription, product and how much of each limit is used. ',
        'The numbers are the gateway\u2019s own counts, the ones it admits calls by.'),
      el('label', { for: 'sub-key' }, 'Subscription key'), key.row, el('p', null, go), out);
    if (key.input.value) run();
  }

  function renderSubscription(out, s) {
    var rows = s.limits.map(function (l) {
      var where = l.scope === 'product' ? 'product' : l.scope === 'api' ? 'API ' + (l.apiName || l.api) : 'operation ' + (l.operationName || l.operation) + ' (' + (l.apiName || l.api) + ')';
      var limit = limitText(l);
      var used, left;
      if (l.kind === 'token-limit') {
        // Tokens, reservations of calls in flight included: this minute, and the quota period.
        var tok = function (m, q) {
          var t = [];
          if (m !== null && m !== undefined) t.push(m + ' tokens this minute');
          if (q !== null && q !== undefined) t.push(q + ' tokens this ' + PERIODS[l.tokenQuotaPeriod]);
          return t.length ? t.join(', ') : '\u2014';
        };
        used = tok(l.tokensUsedThisMinute, l.quotaTokensUsed);
        left = tok(l.tokensLeftThisMinute, l.quotaTokensLeft);
      } else {
        used = l.callsUsed === null ? 'counted per ' + l.counter : String(l.callsUsed);
        left = l.callsLeft === null || l.callsLeft === undefined ? '\u2014' : String(l.callsLeft);
      }
      var bw = l.kind === 'quota' ? l.bandwidthUsedBytes + ' bytes' + (l.bandwidthKb !== null && l.bandwidthKb !== undefined ? ' of ' + l.bandwidthKb + ' KB' : '') : '\u2014';
      var renews = l.renewsAt ? l.renewsAt + ' (in ' + l.renewsInSeconds + ' s)' : '\u2014';
      return [where, limit, el('span', { class: 'calls-used' }, used), el('span', { class: 'calls-left' }, left), bw, renews];
    });
    out.replaceChildren(
      el('dl', { class: 'facts' },
        el('dt', null, 'Subscription'), el('dd', { id: 'sub-id' }, s.id),
        el('dt', null, 'Product'), el('dd', { id: 'sub-product' }, s.product.name, ' ', el('span', { class: 'muted' }, '(' + s.product.id + ')')),
        el('dt', null, 'State'), el('dd', { id: 'sub-state' }, s.state),
        el('dt', null, 'APIs'), el('dd', null, s.apis.map(function (a) { return a.name; }).join(', ')),
        el('dt', null, 'As of'), el('dd', null, s.asOf)),
      el('h2', null, 'Limits'),
      rows.length ? table(['Applies to', 'Limit', 'Calls used', 'Calls left', 'Bandwidth used', 'Renews'], rows, { id: 'sub-limits' })
        : el('p', { class: 'muted' }, 'This product has no limits.'));
  }

  function route() {
    var parts;
    try {
      parts = location.hash.replace(/^#\/?/, '').split('/').filter(function (p) { return p !== ''; }).map(decodeURIComponent);
    } catch (e) {
      parts = [];
    }
    if (parts[0] === 'subscription') return viewSubscription();
    if (parts[0] === 'apis' && parts.length === 2) return viewApi(parts[1]);
    if (parts[0] === 'apis' && parts[2] === 'operations' && parts.length >= 4) return viewOperation(parts[1], parts[3], parts[4] === 'try');
    return viewApis();
  }

  window.addEventListener('hashchange', route);
  route();
})();
