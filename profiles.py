"""Multi-faceted profiles for ProEx: a four-step LLM chain and text embeddings.

Paper: "ProEx: A Unified Framework Leveraging Large Language Model with Profile
Extrapolation for Recommendation" (Zhang et al., KDD'26), Sec. 2.3.1, Eq. 4-5,
Appendix A.2, Fig. 3/10. For every user and every item, four chained calls to
a chat model, each with its own system prompt pi_1..pi_4 (below):
  F1  side information            -> original profile (OP)  (skipped when an OP is given)
  F2  OP                          -> positive and negative aspects
  F3  OP + aspects                -> latent preferences
  F4  OP + aspects + preferences  -> K-1 new profiles (NPs)            (Eq. 4)
then one embedding model embeds all K profiles, the OP too, so that every
view lives in one space: c_k = f_text(s_k)                            (Eq. 5).

Run (any OpenAI-compatible server; --base-url includes the /v1 part, the script
appends /chat/completions and /embeddings):
  export OPENAI_API_KEY=...
  python profiles.py --dataset ml100k --side both --out-dir out/ml100k --dry-run
  python profiles.py --dataset ml100k --side both --out-dir out/ml100k --report
  python profiles.py --dataset ml100k --base-url http://localhost:8000/v1 \
      --model Qwen/Qwen2.5-7B-Instruct --embed-model BAAI/bge-m3   # vLLM; Ollama :11434/v1
Dataset folder: --data-dir, else $PROEX_DATA, else ./data; plus the dataset name
(`book` -> folder `amazon`).

Input per side (usr = users, itm = items): --user-input / --item-input, else the
first of these found in the dataset folder:
  usr_prf.json    JSON list of OP strings, one per id (as in ml100k/)
  usr_prf.pkl     RLMRec archive: list or {id: {'profile', 'reasoning'}};
                  read with an unpickler that only builds plain containers
  usr_side.jsonl  raw side information: one JSON object per line with "id"
                  (0..n-1) and any text fields (titles, descriptions, reviews);
                  F1 writes the OP from it
Output per side in --out-dir (default: the dataset folder), written atomically
and only once every entity of the side is done:
  usr_prf_{1..K-1}.json           NP texts (and usr_prf.json when F1 wrote the OPs)
  usr_emb_np.pkl, usr_emb_np_{k}  float32 [n, d], one row per id, OP then NP k
  usr_prf_journal.jsonl           journal: one line per finished or failed entity
  usr_prf_report.json             with --report: mean cosine OP-vs-NP, NP-vs-NP
To train on new profiles, give the training scripts one folder with everything:
e.g. copy trn/val/tst_mat.pkl into the --out-dir and pass it as the dataset.
Overwrite policy: a fresh run (no journal yet) refuses to start when any output
file exists, unless --overwrite (so the released ml100k/ embeddings are never
replaced by accident: use --out-dir). A run with a journal owns its outputs:
the same command resumes it, retries failed entities, and once all are done
rewrites only files whose bytes differ (a finished run rerun is a no-op). A
journal written under another configuration (models, K, prompts, inputs) is
refused: delete it or choose another --out-dir.
The API key is read from the environment variable named by --api-key-env and
never printed, journaled or written.
"""
import argparse
import base64
import email.utils
import hashlib
import json
import os
import pickle
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import requests

# ----------------------------------------------------------------------------
# The four system prompts pi_1..pi_4 (Appendix A.2, Fig. 10), our own wording.
# fill() joins wrapped lines into one and keeps blank lines as line breaks;
# the fields in braces are filled per side (SIDE_WORDS), the JSON braces stay.

PI_1 = """You write profiles for a recommender system. You receive side information
about one {entity} as JSON: {side_info}.

Write the original profile of this {entity}: a summary of {summary_of}, in at
most {words} words, and a short reasoning behind it.

Answer with one JSON object and nothing else:

{"summarization": "<the profile, at most {words} words>", "reasoning": "<at most two sentences>"}"""

PI_2 = """You analyse one {entity} of a recommender system. You receive its profile.

List its positive aspects ({positive}) and its negative aspects ({negative})
as short phrases, using only what the profile supports.

Answer with one JSON object and nothing else:

{"positive": ["<aspect>", ...], "negative": ["<aspect>", ...]}"""

PI_3 = """You analyse one {entity} of a recommender system. You receive its profile
and its positive and negative aspects.

Infer the latent preferences {latent_of}: the underlying tastes, needs and
motives that are never stated outright but explain these aspects.

Answer with one JSON object and nothing else:

{"latent_preferences": ["<preference>", ...]}"""

PI_4 = """You write profiles for a recommender system. You receive the original
profile of one {entity}, its positive and negative aspects and its latent
preferences.

Write {n} new profiles of this {entity}. Each must be faithful to the
information given, and must differ as much as possible from the original
profile and from the other new profiles, in wording and in structure: vary the
angle (aspects first, latent preferences first, a contrast with what the
{entity} is not), the form (narrative, compact list of traits, second person)
and the vocabulary. Each at most {words} words.

Answer with one JSON object and nothing else, holding exactly {n} strings:

{"profiles": ["<new profile 1>", ..., "<new profile {n}>"]}"""

REASK = ('Your reply above cannot be used: {reason}. Answer again with only the JSON object '
         'in the format the system message asks for.')

SIDE_WORDS = {  # the side-specific words filled into the prompts
    'user': dict(entity='user', words=100,  # OP length as in RLMRec: 100 words for users
                 side_info='the items this user interacted with (titles, descriptions, reviews)',
                 summary_of='which items this user enjoys and why',
                 positive='what this user seeks and enjoys', negative='what this user avoids or dislikes',
                 latent_of='of this user'),
    'item': dict(entity='item', words=200,  # ... and 200 words for items
                 side_info="the item's own description and what users said about it",
                 summary_of='what this item is and which users would enjoy it',
                 positive='what makes this item appealing, and to whom', negative='what could put users off it',
                 latent_of='of the users this item suits'),
}

# ----------------------------------------------------------------------------
# Defaults (every one can be set from the command line)

K = 4                                   # profiles per entity: the OP and K-1 NPs (paper: 4)
BASE_URL = 'https://api.openai.com/v1'  # OpenAI-compatible root, /v1 included
MODEL = 'gpt-3.5-turbo'                 # chat model of the paper
EMBED_MODEL = 'text-embedding-ada-002'  # embedding model of the paper (d = 1536)
API_KEY_ENV = 'OPENAI_API_KEY'          # name of the env var holding the key
CONCURRENCY = 8                         # entities in flight (each has one request open at a time)
TIMEOUT = 120.0                         # seconds allowed per request (connect and read)
MAX_ATTEMPTS = 6                        # attempts per request on 429, 5xx, network errors, bad bodies
BACKOFF = 2.0                           # first retry delay (s); doubles per attempt, with jitter
MAX_REASKS = 2                          # re-asks when a reply is not the requested JSON
BACKOFF_MAX = 120.0                     # cap of our own retry delay (s)
RETRY_AFTER_MAX = 600.0                 # cap of a server's Retry-After (s)
PROGRESS_EVERY = 10.0                   # seconds between progress lines
DATASET_FOLDERS = {'book': 'amazon'}    # dataset name -> folder, where they differ
PREFIX = {'user': 'usr', 'item': 'itm'}  # file-name prefix per side


class BadReply(ValueError):
    """The model's text is not the requested JSON: ask again."""


class EntityFailed(Exception):
    """This entity cannot be done now: journal it as failed, with the reason."""


class Fatal(Exception):
    """No entity can succeed (bad key, wrong URL or model): stop the run."""


@dataclass
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)  # never shown
    timeout: float
    max_attempts: int
    backoff: float
    json_mode: bool


def fill(prompt, **fields):
    """Unwrap the prompt's lines (blank line -> line break) and fill its {name} fields; the
    JSON braces stay literal (no str.format)."""
    prompt = '\n'.join(' '.join(paragraph.split('\n')) for paragraph in prompt.split('\n\n'))
    for name, value in fields.items():
        prompt = prompt.replace('{' + name + '}', str(value))
    return prompt


def redact(text, api_key):
    """Remove the API key, and anything shaped like an OpenAI key, from a message."""
    if api_key:
        text = text.replace(api_key, '***')
    return re.sub(r'sk-[A-Za-z0-9_\-*]{4,}', 'sk-***', text)


# ----------------------------------------------------------------------------
# HTTP: one POST with timeouts, bounded retries, exponential backoff + jitter

def retry_after_seconds(headers):
    """Seconds asked for by Retry-After (seconds or HTTP date) or retry-after-ms; 0 if none."""
    if headers.get('retry-after-ms'):
        try:
            return min(float(headers['retry-after-ms']) / 1000, RETRY_AFTER_MAX)
        except ValueError:
            pass
    value = headers.get('Retry-After')
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def backoff_delay(attempt, base):
    """Exponential backoff with equal jitter: d/2 + U(0, d/2), d = base * 2^(attempt-1)."""
    d = min(base * 2 ** (attempt - 1), BACKOFF_MAX)
    return d / 2 + random.uniform(0, d / 2)


def error_message(response):
    try:
        return str(response.json()['error']['message'])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def post(session, ep, route, payload, parse):
    """POST {base_url}/{route} and return parse(body). Retries 429, 5xx, network errors
    and bodies parse() rejects (408, 409 too); 401/403/404 stop the run; other 4xx fail the entity."""
    headers = {'Authorization': f'Bearer {ep.api_key}'} if ep.api_key else {}
    reason = ''
    for attempt in range(1, ep.max_attempts + 1):
        wait = 0.0
        try:
            r = session.post(f'{ep.base_url}/{route}', json=payload, headers=headers, timeout=ep.timeout)
        except requests.RequestException as e:  # refused, reset, timed out
            reason = type(e).__name__
        else:
            if r.status_code == 200:
                try:
                    return parse(r.json())
                except (ValueError, KeyError, IndexError, TypeError) as e:  # malformed or wrong shape
                    reason = f'unusable response ({type(e).__name__}: {str(e)[:200]})'
            elif r.status_code in (408, 409, 429) or r.status_code >= 500:
                reason = f'HTTP {r.status_code}'
                wait = retry_after_seconds(r.headers)
            elif r.status_code in (401, 403, 404):
                raise Fatal(redact(f'HTTP {r.status_code} from {route}: {error_message(r)}', ep.api_key))
            else:
                raise EntityFailed(redact(f'HTTP {r.status_code} from {route}: {error_message(r)}', ep.api_key))
        if attempt < ep.max_attempts:
            time.sleep(max(wait, backoff_delay(attempt, ep.backoff)))  # honour Retry-After
    raise EntityFailed(redact(f'{route}: {ep.max_attempts} attempts failed, last: {reason}', ep.api_key))


def add_usage(usage, body_usage, keys):
    for ours, theirs in keys:
        usage[ours] += int((body_usage or {}).get(theirs) or 0)


def chat(session, ep, model, messages, usage):
    """One chat completion -> the reply text (OpenAI wire format)."""
    def parse(body):
        text = body['choices'][0]['message']['content']
        if not isinstance(text, str):
            raise TypeError('message content is not a string')
        return text, body.get('usage')
    payload = {'model': model, 'messages': messages}
    if ep.json_mode:
        payload['response_format'] = {'type': 'json_object'}
    text, body_usage = post(session, ep, 'chat/completions', payload, parse)
    usage['chat_calls'] += 1
    add_usage(usage, body_usage, [('prompt_tokens', 'prompt_tokens'), ('completion_tokens', 'completion_tokens')])
    return text


def embed(session, ep, model, texts, dim, usage):
    """f_text (Eq. 5): texts -> float32 [len(texts), dim]; wrong count or dimension is an error."""
    def parse(body):
        rows = sorted(body['data'], key=lambda row: row['index'])
        if [row['index'] for row in rows] != list(range(len(texts))):
            raise ValueError(f'{len(rows)} embeddings for {len(texts)} inputs')
        c = np.asarray([row['embedding'] for row in rows], dtype=np.float32)  # [len(texts), d]
        if c.ndim != 2 or (dim and c.shape[1] != dim):
            raise ValueError(f'embedding dimension {c.shape[1] if c.ndim == 2 else c.shape}, expected {dim}')
        if not np.isfinite(c).all():
            raise ValueError('non-finite embedding')
        return c, body.get('usage')
    c, body_usage = post(session, ep, 'embeddings', {'model': model, 'input': list(texts)}, parse)
    usage['embed_calls'] += 1
    add_usage(usage, body_usage, [('embed_tokens', 'prompt_tokens')])
    return c


# ----------------------------------------------------------------------------
# The chain F1 -> F2 -> F3 -> F4 for one entity

def parse_reply(text):
    """The JSON object in a reply (a ```json fence, text around it, a <think> block are tolerated)."""
    text = re.sub(r'<think>.*?</think>', '', text, flags=re.S)
    start, end = text.find('{'), text.rfind('}')
    if start < 0 or end < start:
        raise BadReply('it is not a JSON object')
    try:
        obj = json.loads(text[start:end + 1])
    except ValueError:
        raise BadReply('it is not valid JSON') from None
    if not isinstance(obj, dict):
        raise BadReply('it is not a JSON object')
    return obj


def string_list(obj, key, min_len=1):
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise BadReply(f'"{key}" must be a list of non-empty strings')
    if len(value) < min_len:
        raise BadReply(f'"{key}" has {len(value)} entries, {min_len} needed')
    return value


def check_f1(obj):
    if not isinstance(obj.get('summarization'), str) or not obj['summarization'].strip():
        raise BadReply('"summarization" must be a non-empty string')
    return obj['summarization'].strip()


def check_f2(obj):
    positive, negative = string_list(obj, 'positive', 0), string_list(obj, 'negative', 0)
    if not positive and not negative:
        raise BadReply('"positive" and "negative" are both empty')
    return {'positive': positive, 'negative': negative}


def check_f3(obj):
    return string_list(obj, 'latent_preferences')


def check_f4(obj, n, op):
    profiles = [s.strip() for s in string_list(obj, 'profiles', n)[:n]]
    if len(set(profiles)) < n or op.strip() in profiles:
        raise BadReply('the new profiles must differ from each other and from the original profile')
    return profiles


def ask(session, ep, args, step, system, user, check, usage):
    """One chain step: call the model, re-ask a bounded number of times on an unusable reply."""
    messages = [{'role': 'system', 'content': system}, {'role': 'user', 'content': user}]
    for _ in range(1 + args.max_reasks):
        text = chat(session, ep, args.model, messages, usage)
        try:
            return check(parse_reply(text))
        except BadReply as e:
            reason = str(e)
        messages = messages[:2] + [{'role': 'assistant', 'content': text},
                                   {'role': 'user', 'content': fill(REASK, reason=reason)}]
    raise EntityFailed(f'{step}: no usable reply in {1 + args.max_reasks} tries, last: {reason}')


def step_messages(side, k, source, op='<OP written by F1>', aspects='<F2 reply>', latent='<F3 reply>'):
    """(system, user) messages of steps F1..F4; placeholders stand in for unknown replies."""
    words = SIDE_WORDS[side]
    f2_user = f'Profile:\n{op}'
    f3_user = f'{f2_user}\n\nAspects:\n{aspects}'
    return {
        'F1': (fill(PI_1, **words), json.dumps(source, ensure_ascii=False)),
        'F2': (fill(PI_2, **words), f2_user),
        'F3': (fill(PI_3, **words), f3_user),
        'F4': (fill(PI_4, n=k - 1, **words), f'{f3_user}\n\nLatent preferences:\n{latent}'),
    }


def make_profiles(ep, args, side, entity_id, source, has_op, dim):
    """F1 -> F2 -> F3 -> F4 -> f_text for one entity; returns its journal record."""
    usage = dict(chat_calls=0, embed_calls=0, prompt_tokens=0, completion_tokens=0, embed_tokens=0)
    k = args.profiles
    try:
        with requests.Session() as session:
            def step(name, check, **replies):
                system, user = step_messages(side, k, source, **replies)[name]
                return ask(session, ep, args, name, system, user, check, usage)
            op = source if has_op else step('F1', check_f1)                   # F1: side information -> OP
            aspects = step('F2', check_f2, op=op)                             # F2: OP -> +/- aspects
            aspects = json.dumps(aspects, ensure_ascii=False)
            latent = step('F3', check_f3, op=op, aspects=aspects)              # F3: latent preferences
            latent = json.dumps(latent, ensure_ascii=False)
            nps = step('F4', lambda obj: check_f4(obj, k - 1, op),            # F4: K-1 new profiles (Eq. 4)
                       op=op, aspects=aspects, latent=latent)
            c = embed(session, ep, args.embed_model, [op] + nps, dim, usage)  # c_k = f_text(s_k) (Eq. 5), [K, d]
    except EntityFailed as e:
        return {'id': entity_id, 'status': 'failed', 'reason': redact(str(e), ep.api_key), 'usage': usage}
    return {'id': entity_id, 'status': 'done', 'op': op, 'nps': nps,
            'emb': base64.b64encode(c.astype('<f4').tobytes()).decode('ascii'), 'usage': usage}


def record_embeddings(record, k):
    """The [K, d] float32 embeddings stored (exactly, as base64) in a journal record."""
    return np.frombuffer(base64.b64decode(record['emb']), dtype='<f4').reshape(k, -1)


# ----------------------------------------------------------------------------
# Inputs

class PlainUnpickler(pickle.Unpickler):
    """Builds only plain containers, strings and numbers: pickle runs code otherwise."""
    ALLOWED = {('builtins', 'set'), ('builtins', 'frozenset'), ('collections', 'OrderedDict')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a profile pickle')


def load_profile_pickle(path):
    """RLMRec usr_prf.pkl / itm_prf.pkl: list or {id: {'profile', 'reasoning'}} -> list of OP strings."""
    with open(path, 'rb') as f:
        data = PlainUnpickler(f).load()
    if isinstance(data, dict):
        if sorted(data) != list(range(len(data))):
            raise ValueError(f'{path}: keys must be the ids 0..{len(data) - 1}')
        data = [data[i] for i in range(len(data))]
    return [entry['profile'] if isinstance(entry, dict) else entry for entry in data]


def load_side_info(path):
    """JSONL side information -> list of dicts (the fields given to F1), in id order."""
    rows = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[row.pop('id')] = row
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f'{path}: ids must be 0..{len(rows) - 1}, each once')
    return [rows[i] for i in range(len(rows))]


def find_input(args, side, folder):
    """Path of the side's input: the explicit flag, else the first known file in the dataset folder."""
    given = args.user_input if side == 'user' else args.item_input
    if given:
        return given
    for name in ('_prf.json', '_prf.pkl', '_side.jsonl'):
        path = os.path.join(folder, PREFIX[side] + name)
        if os.path.exists(path):
            return path
    raise SystemExit(f'no input for {side}s: none of {PREFIX[side]}_prf.json, _prf.pkl, _side.jsonl '
                     f'in {folder}, and no --{side}-input')


def load_inputs(path):
    """-> (list with one entry per id, has_op): OP strings, or side-information dicts for F1."""
    try:
        if path.endswith('.jsonl'):
            return load_side_info(path), False
        if path.endswith('.pkl'):
            sources = load_profile_pickle(path)
        else:
            with open(path, encoding='utf-8') as f:
                sources = json.load(f)
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as e:
        raise SystemExit(f'{path}: {type(e).__name__}: {e}') from None
    if not isinstance(sources, list) or not all(isinstance(s, str) and s.strip() for s in sources):
        raise SystemExit(f'{path}: expected one non-empty profile string per id')
    return sources, True


# ----------------------------------------------------------------------------
# Journal and output files

def fingerprint(args, side, sources, dim):
    """What a journal's records depend on; a resumed run must match it."""
    prompts = json.dumps([PI_1, PI_2, PI_3, PI_4, SIDE_WORDS[side]], sort_keys=True)
    return {'version': 1, 'side': side, 'profiles': args.profiles, 'model': args.model,
            'embed_model': args.embed_model, 'embed_dim': dim, 'n': len(sources),
            'prompts_sha256': hashlib.sha256(prompts.encode()).hexdigest(),
            'inputs_sha256': hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()}


def read_journal(path):
    """-> (header, {id: record}); a last line cut short by a kill is dropped from the file.
    A failed record is replaced by a later one for the same id (failed entities are retried)."""
    with open(path, 'rb') as f:
        data = f.read()
    if not data.endswith(b'\n'):
        with open(path, 'r+b') as f:
            f.truncate(data.rfind(b'\n') + 1)  # the record was never complete: it does not count
        data = data[:data.rfind(b'\n') + 1]
    lines = [json.loads(line) for line in data.decode('utf-8').splitlines() if line.strip()]
    if not lines:
        return None, {}  # killed before the header was on disk: a fresh start
    if 'header' not in lines[0]:
        raise SystemExit(f'{path}: not a profiles journal (no header line)')
    records = {}
    for record in lines[1:]:
        if records.get(record['id'], {}).get('status') != 'done':
            records[record['id']] = record
    return lines[0]['header'], records


def append_line(f, obj):
    """A record counts only once it is on disk."""
    f.write(json.dumps(obj, ensure_ascii=False) + '\n')
    f.flush()
    os.fsync(f.fileno())


def write_atomic(path, data):
    """Temp file in the same folder, fsync, os.replace: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.tmp_' + os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_bytes(path):
    if not os.path.exists(path):
        return None
    with open(path, 'rb') as f:
        return f.read()


def output_names(side, k, has_op):
    p = PREFIX[side]
    names = [] if has_op else [f'{p}_prf.json']
    names += [f'{p}_prf_{j}.json' for j in range(1, k)]
    return names + [f'{p}_emb_np.pkl'] + [f'{p}_emb_np_{j}.pkl' for j in range(1, k)]


def write_outputs(out_dir, side, k, has_op, records):
    """The official files from a complete journal; files whose bytes already match are left alone."""
    n = len(records)
    texts = [[records[i]['op'] for i in range(n)]] + [[records[i]['nps'][j] for i in range(n)] for j in range(k - 1)]
    c = np.stack([record_embeddings(records[i], k) for i in range(n)])  # [n, K, d]
    blobs = [json.dumps(t, ensure_ascii=False, indent=0).encode('utf-8') for t in (texts[1:] if has_op else texts)]
    blobs += [pickle.dumps(np.ascontiguousarray(c[:, j]), protocol=4) for j in range(k)]  # float32 [n, d]
    written = []
    for name, blob in zip(output_names(side, k, has_op), blobs):
        path = os.path.join(out_dir, name)
        if read_bytes(path) != blob:
            write_atomic(path, blob)
            written.append(name)
    return written


def cosine_report(c):
    """Mean cosine OP-vs-NP and NP-vs-NP over entities (the paper's Fig. 4(a) claim). c: [n, K, d]."""
    c = c / np.maximum(np.linalg.norm(c, axis=2, keepdims=True), 1e-12)
    s = np.einsum('nkd,njd->nkj', c, c)  # [n, K, K] cosine between the K views of each entity
    a, b = np.triu_indices(c.shape[1] - 1, 1)
    return {'n': int(c.shape[0]),
            'op_vs_np': float(s[:, 0, 1:].mean()),
            'op_vs_np_per_k': [float(x) for x in s[:, 0, 1:].mean(0)],
            'np_vs_np': float(s[:, 1:, 1:][:, a, b].mean()) if len(a) else None}


# ----------------------------------------------------------------------------
# Running one side

def dry_run(args, side, sources, has_op, todo):
    """Print the four prompts of one entity and estimate calls and tokens (4 characters ~ 1 token)."""
    i = todo[0] if todo else 0
    op = sources[i] if has_op else '<OP written by F1>'
    for step, (system, user) in step_messages(side, args.profiles, sources[i], op).items():
        if step == 'F1' and has_op:
            print(f'--- {side} {i}: F1 skipped, the OP is given')
            continue
        print(f'--- {side} {i}: {step} system prompt ---\n{system}\n--- {step} user message ---\n{user}\n')
    n, k = len(todo), args.profiles
    words = SIDE_WORDS[side]['words']
    op_tok = np.mean([len(sources[j]) for j in todo]) / 4 if has_op and n else words * 4 / 3
    src_tok = 0 if has_op or not n else np.mean([len(json.dumps(sources[j])) for j in todo]) / 4
    sys_tok = [len(fill(p, n=k - 1, **SIDE_WORDS[side])) / 4 for p in (PI_1, PI_2, PI_3, PI_4)]
    # replies assumed: aspects and latent preferences half an OP each, each NP one OP
    prompt = sys_tok[1] + op_tok + sys_tok[2] + 1.5 * op_tok + sys_tok[3] + 2 * op_tok
    completion = 0.5 * op_tok + 0.5 * op_tok + (k - 1) * op_tok
    if not has_op:
        prompt, completion = prompt + sys_tok[0] + src_tok, completion + op_tok
    calls = (3 if has_op else 4) * n
    print(f'{side}: {n} entities to do -> {calls} chat calls, {n} embedding calls, '
          f'~{prompt * n:,.0f} prompt + ~{completion * n:,.0f} completion tokens, '
          f'~{k * op_tok * n:,.0f} embedding tokens (estimate; first tries only)')


def progress(side, done, total, failed, finished, todo, t0):
    """One progress line; rate and ETA count the entities finished (done or failed) in this run."""
    rate = finished / max(time.time() - t0, 1e-9)
    return (f'{side}: {done}/{total} done, {failed} failed, {rate:.2f}/s, '
            f'ETA {(todo - finished) / rate / 60:.1f} min')


def probe_dim(ep, args):
    """The embedding model's dimension, from one request (when --embed-dim is not given)."""
    usage = dict(embed_calls=0, embed_tokens=0)
    try:
        with requests.Session() as session:
            return int(embed(session, ep, args.embed_model, ['dimension probe'], 0, usage).shape[1])
    except EntityFailed as e:
        raise Fatal(f'cannot get the embedding dimension: {e}') from None


def open_side(args, side):
    """Load the side's input and its journal if any; refuse a fresh run that would overwrite files."""
    p, k = PREFIX[side], args.profiles
    path = find_input(args, side, args.folder)
    sources, has_op = load_inputs(path)
    job = dict(side=side, sources=sources, has_op=has_op, records={}, header=None, dim=args.embed_dim,
               journal=os.path.join(args.out_dir, f'{p}_prf_journal.jsonl'),
               ids=range(min(len(sources), args.limit) if args.limit else len(sources)))
    print(f'{side}: {len(sources)} from {path} ({"OP given" if has_op else "side information, F1 writes the OP"}); '
          f'journal {job["journal"]}')
    header = None
    if os.path.exists(job['journal']):
        header, job['records'] = read_journal(job['journal'])
    existing = [name for name in output_names(side, k, has_op) if os.path.exists(os.path.join(args.out_dir, name))]
    if header is None and existing and not args.overwrite:
        message = f'refusing to overwrite {existing} in {args.out_dir}: pass --overwrite, or another --out-dir'
        if not args.dry_run:
            raise SystemExit(message)
        print(f'note: {message}')
    if header is not None:  # a resumed run must have the configuration its journal was written with
        expected = fingerprint(args, side, sources, args.embed_dim or header['embed_dim'])
        changed = [key for key in expected if expected[key] != header.get(key)]
        if changed:
            raise SystemExit(f'{job["journal"]} was written with another {", ".join(changed)}: '
                             f'delete it to start over, or choose another --out-dir')
    job['header'] = header
    job['todo'] = [i for i in job['ids'] if job['records'].get(i, {}).get('status') != 'done']
    return job


def start_journal(args, job, ep):
    """A fresh run fixes its configuration (and the embedding dimension) in the journal's first line."""
    if job['header'] is None:
        job['header'] = fingerprint(args, job['side'], job['sources'], args.embed_dim or probe_dim(ep, args))
        os.makedirs(args.out_dir, exist_ok=True)
        with open(job['journal'], 'a', encoding='utf-8') as f:
            append_line(f, {'header': job['header']})
    job['dim'] = job['header']['embed_dim']


def run_side(args, job, ep):
    """Every entity not done yet, a bounded number in flight; each result journaled as it lands.
    Returns the ids that failed in this run, with their reasons."""
    side, records, ids, todo = job['side'], job['records'], job['ids'], job['todo']
    usage = dict(chat_calls=0, embed_calls=0, prompt_tokens=0, completion_tokens=0, embed_tokens=0)
    failed, t0, last_print = {}, time.time(), 0.0
    pool = ThreadPoolExecutor(max_workers=args.concurrency)
    try:
        with open(job['journal'], 'a', encoding='utf-8') as journal:
            futures = [pool.submit(make_profiles, ep, args, side, i, job['sources'][i], job['has_op'], job['dim'])
                       for i in todo]
            for finished, future in enumerate(as_completed(futures), 1):
                record = future.result()  # Fatal propagates and stops the run
                append_line(journal, record)  # on disk before it counts
                records[record['id']] = record
                add_usage(usage, record['usage'], [(key, key) for key in usage])
                if record['status'] == 'failed':
                    failed[record['id']] = record['reason']
                if time.time() - last_print > PROGRESS_EVERY or finished == len(todo):
                    done = sum(records.get(i, {}).get('status') == 'done' for i in ids)
                    print(progress(side, done, len(ids), len(failed), finished, len(todo), t0), flush=True)
                    last_print = time.time()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    print(f'{side} summary: {len(todo) - len(failed)} done and {len(failed)} failed in this run; '
          f'{usage["chat_calls"]} chat + {usage["embed_calls"]} embedding calls, tokens: '
          f'{usage["prompt_tokens"]} prompt, {usage["completion_tokens"]} completion, '
          f'{usage["embed_tokens"]} embedding; {time.time() - t0:.1f} s')
    for i in sorted(failed)[:20]:
        print(f'  failed {side} {i}: {failed[i]}')
    if len(failed) > 20:
        print(f'  ... and {len(failed) - 20} more failed (see {job["journal"]})')
    return failed


def finish_side(args, job):
    """The official files once every entity is done; the cosine report over those done so far."""
    side, records, n, k = job['side'], job['records'], len(job['sources']), args.profiles
    done = [i for i in range(n) if records.get(i, {}).get('status') == 'done']
    if len(done) == n:
        written = write_outputs(args.out_dir, side, k, job['has_op'], records)
        print(f'{side}: {n}/{n} done, wrote {written}' if written else f'{side}: {n}/{n} done, files up to date')
    else:
        print(f'{side}: {len(done)}/{n} done, files not written (rerun the same command to continue)')
    if args.report and done:
        report = dict(cosine_report(np.stack([record_embeddings(records[i], k) for i in done])),
                      complete=len(done) == n)
        print(f'{side} report: mean cosine OP-vs-NP {report["op_vs_np"]:.4f}, NP-vs-NP {report["np_vs_np"]} '
              f'over {report["n"]} entities')
        path = os.path.join(args.out_dir, f'{PREFIX[side]}_prf_report.json')
        write_atomic(path, json.dumps(report, indent=1).encode())


# ----------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description='ProEx profile construction: F1-F4 LLM chain and embeddings '
                                 '(paper Sec. 2.3.1, Eq. 4-5). See the module docstring for files and policies.')
    ap.add_argument('--dataset', required=True, help='dataset name; "book" reads the folder "amazon"')
    ap.add_argument('--data-dir', default=None, help='folder holding the datasets (default: $PROEX_DATA, else ./data)')
    ap.add_argument('--out-dir', default=None, help='where outputs and journal go (default: the dataset folder)')
    ap.add_argument('--side', choices=['user', 'item', 'both'], default='both', help='which entities to profile')
    ap.add_argument('--user-input', default=None, help='user input file (.json OP list, .pkl RLMRec, .jsonl side info)')
    ap.add_argument('--item-input', default=None, help='item input file (same formats as --user-input)')
    ap.add_argument('--base-url', default=BASE_URL, help='OpenAI-compatible API root including /v1, e.g. '
                    'http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama)')
    ap.add_argument('--model', default=MODEL, help='chat model for F1-F4')
    ap.add_argument('--embed-model', default=EMBED_MODEL, help='embedding model for all K profiles (Eq. 5)')
    ap.add_argument('--embed-dim', type=int, default=0, help='expected embedding dimension (0: ask the server once)')
    ap.add_argument('--api-key-env', default=API_KEY_ENV, help='environment variable holding the API key '
                    '(may be unset for local servers)')
    ap.add_argument('--profiles', type=int, default=K, help='K, profiles per entity: the OP and K-1 new ones')
    ap.add_argument('--concurrency', type=int, default=CONCURRENCY, help='entities processed in parallel')
    ap.add_argument('--limit', type=int, default=0, help='only ids 0..N-1 (0: all); outputs need all ids done')
    ap.add_argument('--timeout', type=float, default=TIMEOUT, help='seconds allowed per HTTP request')
    ap.add_argument('--max-attempts', type=int, default=MAX_ATTEMPTS, help='attempts per request on 429, 5xx, '
                    'network errors or malformed bodies, then the entity fails')
    ap.add_argument('--backoff', type=float, default=BACKOFF, help='first retry delay in seconds (doubles, jittered)')
    ap.add_argument('--max-reasks', type=int, default=MAX_REASKS, help='re-asks when a reply is not the requested '
                    'JSON, then the entity fails')
    ap.add_argument('--json-mode', action='store_true', help='send response_format json_object (if the server has it)')
    ap.add_argument('--overwrite', action='store_true', help='let a fresh run replace existing output files')
    ap.add_argument('--report', action='store_true', help='print and write <side>_prf_report.json: '
                    'mean cosine OP-vs-NP and NP-vs-NP')
    ap.add_argument('--dry-run', action='store_true', help='print the four prompts for one entity and estimate '
                    'calls and tokens; no request is sent')
    args = ap.parse_args(argv)
    if args.profiles < 2 or args.concurrency < 1 or args.max_attempts < 1 or args.max_reasks < 0:
        ap.error('need --profiles >= 2, --concurrency >= 1, --max-attempts >= 1, --max-reasks >= 0')
    data_dir = args.data_dir or os.environ.get('PROEX_DATA') or './data'
    args.folder = os.path.join(data_dir, DATASET_FOLDERS.get(args.dataset, args.dataset))
    args.out_dir = args.out_dir or args.folder
    return args


def main(argv=None):
    args = parse_args(argv)
    print('config:', json.dumps(vars(args)))  # only the key's variable name is in args
    print(f'API key: ${args.api_key_env} is {"set" if os.environ.get(args.api_key_env) else "not set"}')
    ep = Endpoint(args.base_url.rstrip('/'), os.environ.get(args.api_key_env, ''), args.timeout,
                  args.max_attempts, args.backoff, args.json_mode)
    failed = {}
    try:
        jobs = [open_side(args, side) for side in (['user', 'item'] if args.side == 'both' else [args.side])]
        for job in jobs if not args.dry_run else []:  # every side checked before any starts
            start_journal(args, job, ep)
        for job in jobs:
            if args.dry_run:
                dry_run(args, job['side'], job['sources'], job['has_op'], job['todo'])
                continue
            failed[job['side']] = run_side(args, job, ep)
            finish_side(args, job)
    except Fatal as e:
        print(f'stopped: {redact(str(e), ep.api_key)}', file=sys.stderr)
        return 1
    except SystemExit as e:  # refusals and input errors: a message and exit status 2
        if isinstance(e.code, str):
            print(f'error: {e.code}', file=sys.stderr)
            return 2
        raise
    return 1 if any(failed.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
