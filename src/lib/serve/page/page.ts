// GET /: a page to try the served models. Self-contained (inline CSS and script, no fonts, CDNs or
// other hosts: the Content-Security-Policy allows this page's own script and style, by hash, and
// requests to this server only). It lists models with Triton's repository index, sends the image as
// a KServe V2 BYTES input with the classification extension, and shows the top-k classes, the
// model and version that answered, and the latency; a token field serves servers with auth on.
import {createHash} from 'node:crypto'

const STYLE = `
:root { color-scheme: light dark; --accent: #2563eb; --muted: #6b7280; }
[hidden] { display: none !important; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; justify-content: center; }
main { width: min(40rem, 100% - 2rem); padding: 1.5rem 0; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
form { display: grid; grid-template-columns: auto 1fr; gap: .5rem .75rem; align-items: center; }
select, input { font: inherit; padding: .3rem .4rem; }
#drop { grid-column: 1 / -1; border: 2px dashed var(--muted); border-radius: .6rem; padding: 1.5rem; text-align: center; cursor: pointer; }
#drop.over { border-color: var(--accent); background: color-mix(in srgb, var(--accent) 10%, transparent); }
#file { display: none; }
#preview { display: block; max-width: 12rem; max-height: 12rem; margin: 1rem auto; image-rendering: pixelated; }
#status { min-height: 1.5rem; color: var(--muted); }
#status.error { color: #dc2626; }
table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid color-mix(in srgb, var(--muted) 40%, transparent); }
td.score { font-variant-numeric: tabular-nums; width: 40%; }
meter { width: 100%; }
footer { margin-top: 1.5rem; color: var(--muted); font-size: .85rem; }
`

const SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const status = (text, error) => { $('status').textContent = text; $('status').className = error ? 'error' : ''; };
const headers = (extra) => {
  const h = Object.assign({}, extra);
  const token = $('token').value.trim();
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
};
async function call(path, body) {
  const response = await fetch(path, {method: 'POST', headers: headers({'Content-Type': 'application/json'}), body: JSON.stringify(body)});
  const text = await response.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  if (response.status === 401) throw new Error('this server needs a token: enter it in the Token field');
  if (!response.ok) throw new Error((json && json.error) || ('HTTP ' + response.status));
  return json;
}
async function loadModels() {
  try {
    const index = await call('/v2/repository/index', {});
    const names = [...new Set(index.filter((v) => v.state === 'READY').map((v) => v.name))].sort();
    const select = $('model');
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
    status(names.length ? 'Ready: drop an image.' : 'No model is ready yet.', names.length === 0);
    document.body.dataset.ready = names.length ? 'true' : 'false';
  } catch (error) {
    status(error.message, true);
    document.body.dataset.ready = 'false';
  }
}
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
function show(answer, ms) {
  const rows = answer.outputs[0].data.map((entry, i) => {
    // Triton's classification format: score:index:label (the label may hold colons).
    const first = entry.indexOf(':');
    const second = entry.indexOf(':', first + 1);
    return {rank: i + 1, score: Number(entry.slice(0, first)), label: entry.slice(second + 1)};
  });
  $('summary').textContent = 'Model ' + answer.model_name + ', version ' + answer.model_version + ', ' + ms.toFixed(1) + ' ms';
  $('summary').dataset.model = answer.model_name;
  $('summary').dataset.version = answer.model_version;
  $('rows').replaceChildren(...rows.map((row) => {
    const tr = document.createElement('tr');
    const rank = document.createElement('td');
    rank.textContent = String(row.rank);
    const label = document.createElement('td');
    label.textContent = row.label;
    label.className = 'label';
    const score = document.createElement('td');
    score.className = 'score';
    const meter = document.createElement('meter');
    meter.value = row.score;
    score.append(meter, ' ' + row.score.toFixed(4));
    tr.append(rank, label, score);
    return tr;
  }));
  $('result').hidden = false;
  $('top').textContent = rows.length ? rows[0].label : '';
  document.body.dataset.state = 'answered';
}
async function classify(file) {
  const model = $('model').value;
  if (!model) { status('No model to ask: is the token right?', true); return; }
  document.body.dataset.state = 'busy';
  $('preview').src = URL.createObjectURL(file);
  $('preview').hidden = false;
  status('Classifying ' + file.name + '...');
  try {
    const k = Math.max(1, Math.min(100, Number($('k').value) || 5));
    const body = {inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [base64(await file.arrayBuffer())]}], outputs: [{name: 'probabilities', parameters: {classification: k}}]};
    const started = performance.now();
    const answer = await call('/v2/models/' + encodeURIComponent(model) + '/infer', body);
    const ms = performance.now() - started;
    show(answer, ms);
    status(file.name + ': ' + $('top').textContent);
  } catch (error) {
    status(error.message, true);
    document.body.dataset.state = 'failed';
  }
}
$('file').addEventListener('change', () => { if ($('file').files.length) classify($('file').files[0]); });
const drop = $('drop');
drop.addEventListener('click', () => $('file').click());
drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('file').click(); } });
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
$('token').addEventListener('change', loadModels);
loadModels();
`

const BODY = `<main>
<h1>Try the model</h1>
<form id="form" autocomplete="off">
  <label for="model">Model</label><select id="model"></select>
  <label for="k">Top</label><input id="k" type="number" min="1" max="100" value="5">
  <label for="token">Token</label><input id="token" type="password" placeholder="only when the server has auth on">
  <div id="drop" tabindex="0" role="button">Drop an image here, or click to choose one<input id="file" type="file" accept="image/*"></div>
</form>
<img id="preview" alt="the image sent" hidden>
<p id="status" role="status"></p>
<p hidden>Top class: <span id="top"></span></p>
<table id="result" hidden><caption id="summary"></caption><thead><tr><th>#</th><th>Class</th><th>Score</th></tr></thead><tbody id="rows"></tbody></table>
<footer>Calls this server's KServe V2 API (<code>POST /v2/models/{model}/infer</code>); every endpoint is described in <a href="/openapi.json">/openapi.json</a>.</footer>
</main>`

const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ml serve</title>
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`

/** Only this page's own style and script run, and it talks to this server alone. */
export const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  'img-src blob: data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')
