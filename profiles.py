"""Multi-faceted profiles for ProEx: a four-step LLM chain and text embeddings.

Paper: "ProEx: A Unified Framework Leveraging Large Language Model with Profile
Extrapolation for Recommendation" (Zhang et al., KDD'26), Sec. 2.3.1, Eq. 4-5,
Appendix A.2, Fig. 3/10. For every user and every item, chained calls to a chat
model, each with its own system prompt pi_1..pi_4:
  F1  side information            -> original profile (OP)  (skipped when an OP is given)
  F2  OP                          -> positive and negative aspects
  F3  OP + aspects                -> latent preferences
  F4  OP + aspects + preferences  -> K-1 new profiles (NPs)            (Eq. 4)
then one embedding model embeds all K profiles, the OP too, so that every
view lives in one space: c_k = f_text(s_k)                            (Eq. 5).

Layout: the paper first, then the machinery that runs it (one header comment per section).
  the paper     PI_1..PI_4 and the words they are filled with per side;
                make_profiles: the chain of one entity, F1..F4 as four calls (Fig. 10),
                then its K profiles embedded by `embed` (Eq. 5)
  machinery     prompts filled in and each step's reply format; replies: parse, check,
                re-ask, fallbacks; inputs; journal, vector store, output files; one side;
                command line; HTTP: timeouts, retries, fail fast; --batch-api; online mode
                (--concurrency); --dry-run; utilities

Run (any OpenAI-compatible server; --base-url includes the /v1 part, the script
appends /chat/completions and /embeddings):
  export OPENAI_API_KEY=...
  python profiles.py --dataset ml100k --out-dir /tmp/ml100k --dry-run --price-in 0.5 --price-out 1.5
  python profiles.py --dataset ml100k --out-dir /tmp/ml100k --report
  python profiles.py --dataset ml100k --out-dir /tmp/ml100k --batch-api     # OpenAI Batch API, half price
  python profiles.py --dataset ml100k --base-url http://localhost:8000/v1 --json-schema \
      --model Qwen/Qwen2.5-7B-Instruct --embed-model BAAI/bge-m3   # vLLM; Ollama :11434/v1
  --embed-base-url sends the embeddings to another server (e.g. a dedicated embedding server);
  --json-schema asks for each step's JSON Schema as response_format (structured outputs), which
  lets small local models follow the formats.
Dataset folder: --data-dir, else $PROEX_DATA, else ./data; plus the dataset name
(`book` -> folder `amazon`).

Input per side (usr = users, itm = items): --user-input / --item-input, else the
first of these found in the dataset folder:
  usr_prf.json    JSON list of OP strings, one per id (as in ml100k/)
  usr_prf.pkl     RLMRec's OP texts (book, yelp, steam: the release archive that holds
                  the OP embeddings usr_emb_np.pkl): a pickled list, or dict {id: ...},
                  of {'profile': str, 'reasoning': str}; read with data.safe_load
  usr_side.jsonl  raw side information: one JSON object per line with "id"
                  (0..n-1) and any fields (e.g. titles, genres, reviews); F1 writes
                  the OP from it, its prompt naming the fields the record fills
Output per side in --out-dir (default: the dataset folder), written atomically
once every entity of the side is finished (done, or done with a fallback):
  usr_prf_{1..K-1}.json           NP texts (and usr_prf.json when F1 wrote the OPs)
  usr_emb_np.pkl, usr_emb_np_{k}  float32 [n, d], one row per id, OP then NP k
  usr_prf_journal.jsonl           journal: one line per finished entity (texts, no vectors)
  usr_emb_store.f32               the journal's vectors: append-only float32, [K, d] per entity
  usr_prf_report.json             with --report: mean cosine OP-vs-NP, NP-vs-NP, fallbacks
The journal is read line by line, the vectors block by block, and at most
2 x --concurrency entities are in flight, so memory grows only with the inputs
and one [n, d] view while the files are written (--batch-api mode also holds
the step results of the entities it runs).
Fallbacks: an entity that cannot succeed does not block the run. When a chat
step fails for good (HTTP 400, or a reply still unusable after --max-reasks
re-asks, or --max-attempts transient errors), its K-1 new profiles are copies of
its OP (its OP is the side information as text when F1 failed); an embedding
request answered with HTTP 400 is sent again once with every input cut to
--max-input-chars; if the embeddings still fail, the entity's rows are the mean
embedding of the side. Fallbacks are counted in the summary and the report,
journaled with their reason, and retried by a rerun with --retry-fallbacks
(from the step that failed).
Fail fast: after FAIL_FAST consecutive identical failures that will not go away
(connection refused, HTTP 401/403/404, 429 insufficient_quota) the run stops
with the URL, the step and the server's message.
--limit N profiles ids 0..N-1 only and writes no output file (the files need
every id); rerun without --limit to finish the side.
Exit status: 0 all done; 1 stopped (fail fast, or the side is unfinished);
2 refused (inputs, overwrite, changed configuration); 3 files written, but some
entities used a fallback. A bad flag or value is one `error:` line naming what
is valid (eval.ArgumentParser), before anything starts.
Overwrite policy: a fresh run (no journal yet) refuses to start when any output
file exists, unless --overwrite (so released embeddings, e.g. ml100k/ or RLMRec's
OP embeddings, are never replaced by accident: use --out-dir). A run with a journal
owns its outputs: the same command resumes it, and once all are finished rewrites
only files whose bytes differ (a finished run rerun is a no-op). A journal written
under another configuration (models, K, prompts, inputs) is refused: delete it (and
the store) or choose another --out-dir.
The API key is read from the environment variable named by --api-key-env and
never printed, journaled or written.
"""
import email.utils
import hashlib
import json
import os
import pickle
import random
import re
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import requests

import data as D  # D.safe_load: the project's one unpickler that runs no code
from eval import ArgumentParser, float_range, int_range  # one-line command-line errors

# ============================================================================
# The paper: pi_1..pi_4, the chain of one entity (Fig. 10), its embeddings (Eq. 5)
# ============================================================================

# The four system prompts pi_1..pi_4 (Sec. 2.3.1, Appendix A.2, Fig. 10), our own wording.
# fill() joins wrapped lines into one and keeps blank lines as line breaks; the fields in
# braces are filled per side (SIDE_WORDS), per step ({format}: the step's JSON Schema shown
# as an example, see step_schema) and, in pi_1, per record ({side_info}: the fields that
# record fills, see side_info_words).

PI_1 = """You write profiles for a recommender system. You receive side information
about one {entity} as JSON: {side_info}.

Write the original profile of this {entity}: a summary of {summary_of}, in at
most {words} words, and a short reasoning behind it.

Answer with one JSON object and nothing else:

{format}"""

PI_2 = """You analyse one {entity} of a recommender system. You receive its profile.

List its positive aspects ({positive}) and its negative aspects ({negative})
as short phrases.

Answer with one JSON object and nothing else:

{format}"""

PI_3 = """You analyse one {entity} of a recommender system. You receive its profile
and its positive and negative aspects.

Infer the latent preferences {latent_of}: the underlying tastes, needs and
motives that are never stated outright but explain these aspects.

Answer with one JSON object and nothing else:

{format}"""

# Sec. 2.3.1 / A.2: the NPs describe the entity from different perspectives, with wording and
# structure maximally different from the OP.
PI_4 = """You write profiles for a recommender system. You receive the original
profile of one {entity}, its positive and negative aspects and its latent
preferences.

Write {n} new profiles of this {entity} that describe it from different
perspectives, building on its aspects and latent preferences. Make the wording
and the structure of each new profile as different as possible from the
original profile and from the other new profiles. Each at most {words} words.

Answer with one JSON object and nothing else, holding exactly {n} strings:

{format}"""

PROMPTS = {'F1': PI_1, 'F2': PI_2, 'F3': PI_3, 'F4': PI_4}

SIDE_WORDS = {  # the side-specific words filled into the prompts
    'user': dict(entity='user', words=100,  # OP length as in RLMRec: 100 words for users
                 summary_of='which items this user enjoys and why',
                 positive='what this user seeks and enjoys', negative='what this user avoids or dislikes',
                 latent_of='of this user'),
    'item': dict(entity='item', words=200,  # ... and 200 words for items
                 summary_of='what this item is and which users would enjoy it',
                 positive='what makes this item appealing, and to whom', negative='what could put users off it',
                 latent_of='of the users this item suits'),
}


def make_profiles(ep, args, job, i, s):
    """Entity i, online: the chain of Fig. 10, one chat call per step, each with its own system
    prompt pi_n and the replies of the steps before it (step_messages), then its K profiles
    embedded (Eq. 5). s: what is known of i (the OP when given; the steps an earlier run finished),
    filled in here; a step s already holds is not asked again.
    -> (journal record, float32 [K, d]). A step or the embeddings failing for good give a fallback
    (fallback_texts), never an exception (except Fatal, which stops the run)."""
    side, k, source = job['side'], args.n_profiles, job['sources'][i]
    usage, reasons, emb_fallback = new_usage(), [], False
    with requests.Session() as session:
        def ask(step):  # one step: ask, check the reply, re-ask while it cannot be used
            return ask_step(session, ep, args, new_turn(side, k, source, s, step), s, usage)
        try:
            if 'op' not in s:       # F1, pi_1: side information -> OP (skipped when the OP is given)
                s['op'] = ask('F1')
            if 'aspects' not in s:  # F2, pi_2: OP -> positive and negative aspects
                s['aspects'] = ask('F2')
            if 'latent' not in s:   # F3, pi_3: OP + aspects -> latent preferences
                s['latent'] = ask('F3')
            if 'nps' not in s:      # F4, pi_4: OP + aspects + latent preferences -> K-1 NPs (Eq. 4)
                s['nps'] = ask('F4')
        except EntityFailed as e:
            reasons.append(f'{e}; new profiles fall back to the OP')
        texts = fallback_texts(s, source, job['has_op'], k, args.max_input_chars)  # s_0 = OP, s_1..s_{K-1}
        try:
            c, note = embed(session, ep.embed, args, texts, job['dim'], usage)  # Eq. 5: c_k = f_text(s_k), [K, d]
            reasons += [note] if note else []
        except EntityFailed as e:
            c, emb_fallback = np.zeros((k, job['dim']), np.float32), True
            reasons.append(f'{e}; rows fall back to the mean embedding of the side')
    return entity_record(i, texts, reasons, emb_fallback, s, usage, ep), c


def embed(session, ep, args, texts, dim, usage):
    """f_text of Eq. 5 with --embed-model: c_k = f_text(s_k) for the texts, in one /embeddings
    request -> (float32 [len(texts), d], note). A wrong count, or a dimension other than dim (when
    dim > 0), is an error. After an HTTP 400 the inputs are cut to --max-input-chars and sent once
    more; the note says so (None otherwise)."""
    note = None
    while True:
        try:
            c, body_usage = request(session, ep, 'POST', 'embeddings',
                                    lambda r: pooled_warning(ep, embedding_rows(r.json(), len(texts), dim)),
                                    'embeddings', json={'model': args.embed_model, 'input': list(texts)})
            count_usage(ep, usage, body_usage, 'embeddings')
            return c, note
        except Rejected as e:
            cut = [t[:args.max_input_chars] for t in texts]
            if cut == texts:
                raise
            texts, note = cut, f'embedding inputs cut to {args.max_input_chars} characters after: {e}'


# ============================================================================
# The machinery: what makes the chain run for every entity of a side, survive faults and
# kills, and write the official files
# ============================================================================

# ----------------------------------------------------------------------------
# Prompts filled in: the words per side-information field (pi_1), each step's reply format as one
# JSON Schema (shown in its prompt, checked in its reply, sent with --json-schema), each step's
# messages

FIELD_WORDS = {  # how pi_1 names a side-information field; any other: its name, '_' -> ' '
    'liked_movies': 'the titles and genres of the movies they liked',
    'year': 'release year',
}


def present_fields(source):
    """The fields of a side-information record that hold something, in the record's order (None,
    a blank string, an empty list or object: the record lacks that field)."""
    present = []
    for name, value in source.items():
        blank = not value.strip() if isinstance(value, str) else value is None or value in ([], {})
        if not blank:
            present.append(name)
    return present


def side_info_words(entity, source=None):
    """What pi_1 says the side information holds: the fields `source` fills (a record given to
    F1), so the model is never told of a field the record lacks."""
    if not isinstance(source, dict):
        return f"the fields of this {entity}'s record"
    words = [FIELD_WORDS.get(n, n.replace('_', ' ')) for n in present_fields(source)]
    if not words:
        return 'no filled field (every field of this record is empty)'
    return f"the {entity}'s " + (', '.join(words[:-1]) + ' and ' + words[-1] if len(words) > 1 else words[0])


def fill(prompt, **fields):
    """Unwrap the prompt's lines (blank line -> line break) and fill its {name} fields, in the
    order given (so a filled-in format can hold {words}); JSON braces stay literal."""
    prompt = '\n'.join(' '.join(paragraph.split('\n')) for paragraph in prompt.split('\n\n'))
    for name, value in fields.items():
        prompt = prompt.replace('{' + name + '}', str(value))
    return prompt


def step_schema(side, step, k):
    """The reply of a step as a JSON Schema: the one source of the format its prompt shows
    (shown_format), of what the parser checks (check_schema) and of --json-schema's response_format."""
    words = SIDE_WORDS[side]['words']

    def text(description):
        return {'type': 'string', 'description': description}

    def texts(description, least, most=None):
        return dict(type='array', items=text(description), minItems=least, **({'maxItems': most} if most else {}))
    fields = {'F1': {'summarization': text(f'the profile, at most {words} words'),
                     'reasoning': text('at most two sentences')},
              'F2': {'positive': texts('aspect', 0), 'negative': texts('aspect', 0)},
              'F3': {'latent_preferences': texts('preference', 1)},
              'F4': {'profiles': texts('new profile', k - 1, k - 1)}}[step]
    return {'type': 'object', 'properties': fields, 'required': list(fields), 'additionalProperties': False}


def shown_format(schema):
    """A schema as the one-line JSON example a prompt shows: each string a <description>; a list of
    fixed length n shows n numbered entries, any other list two. Valid JSON, so a model that copies
    it answers valid JSON."""
    def example(s):
        if s['type'] == 'string':
            return f'<{s["description"]}>'
        n = s.get('maxItems')
        if n and n == s['minItems']:
            return [f'<{s["items"]["description"]} {j}>' for j in range(1, n + 1)]
        return [example(s['items'])] * 2
    return json.dumps({key: example(value) for key, value in schema['properties'].items()}, ensure_ascii=False)


def system_prompt(side, step, k, source=None):
    """pi_1..pi_4 filled for one side; F4 asks for k-1 NPs; F1 names the fields `source` fills."""
    words = dict(SIDE_WORDS[side], side_info=side_info_words(SIDE_WORDS[side]['entity'], source))
    return fill(PROMPTS[step], format=shown_format(step_schema(side, step, k)), n=k - 1, **words)


def max_tokens(side, step, k):
    """Completion budget of a step: about 2 tokens per word of the asked length (1.3 + margin)."""
    words = SIDE_WORDS[side]['words']
    return {'F1': 2 * words + 150, 'F2': 400, 'F3': 400, 'F4': 2 * words * (k - 1) + 150}[step]


def step_messages(side, k, source, op='<OP written by F1>', aspects='<F2 reply>', latent='<F3 reply>'):
    """(system, user) messages of steps F1..F4; placeholders stand in for unknown replies."""
    f2_user = f'Profile:\n{op}'
    f3_user = f'{f2_user}\n\nAspects:\n{aspects}'
    users = {'F1': json.dumps(source, ensure_ascii=False), 'F2': f2_user, 'F3': f3_user,
             'F4': f'{f3_user}\n\nLatent preferences:\n{latent}'}
    return {step: (system_prompt(side, step, k, source), users[step]) for step in PROMPTS}


# ----------------------------------------------------------------------------
# Replies: the JSON object, then each step's fields (lenient where a model can be); a reply that
# cannot be used is asked again; what a step that failed for good leaves out falls back to the OP

class BadReply(ValueError):
    """The model's text is not the requested JSON: ask again."""


class EntityFailed(Exception):
    """This entity cannot be done now: it gets a fallback (journaled with the reason)."""


class Rejected(EntityFailed):
    """The server refused this request for good (HTTP 400 and other 4xx): retrying it is useless."""


class Fatal(Exception):
    """No entity can succeed (server down, bad key, wrong URL or model, no quota): stop the run."""


def parse_reply(text):
    """The JSON object in a reply (a ```json fence, text around it, a <think> block, raw line breaks
    inside strings are tolerated)."""
    text = re.sub(r'<think>.*?</think>', '', text, flags=re.S)
    start, end = text.find('{'), text.rfind('}')
    if start < 0 or end < start:
        raise BadReply('it is not a JSON object')
    try:
        obj = json.loads(text[start:end + 1], strict=False)  # line breaks inside strings are fine
    except ValueError:
        raise BadReply('it is not valid JSON') from None
    if not isinstance(obj, dict):
        raise BadReply('it is not a JSON object')
    return obj


def string_list(obj, key, min_len=1):
    """A list of non-empty strings; a single string counts as a list of one."""
    value = obj.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise BadReply(f'"{key}" must be a list of non-empty strings')
    if len(value) < min_len:
        raise BadReply(f'"{key}" has {len(value)} entries, {min_len} needed')
    return [s.strip() for s in value]


def one_string(obj, key):
    """A non-empty string; a list of one string counts as that string."""
    value = obj.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise BadReply(f'"{key}" must be a non-empty string')
    return value.strip()


def check_schema(obj, schema):
    """The fields a step's schema asks for, each read leniently (string_list, one_string)."""
    return {key: one_string(obj, key) if spec['type'] == 'string'
            else string_list(obj, key, spec['minItems'])[:spec.get('maxItems')]
            for key, spec in schema['properties'].items()}


def copied_placeholder(fields, schema):
    """The first <placeholder> of the format shown_format prints for this schema that the reply's
    fields repeat (anywhere in a text, numbered or not, any case), or None."""
    shown = [s for v in json.loads(shown_format(schema)).values() for s in (v if isinstance(v, list) else [v])]
    names = {re.sub(r'\s+\d+$', '', s[1:-1]) for s in shown}  # '<new profile 2>' -> 'new profile'
    pattern = re.compile(r'<\s*(?:%s)(?:\s+\d+)?\s*>' % '|'.join(r'\s+'.join(map(re.escape, n.split()))
                                                              for n in sorted(names)), re.I)
    for value in fields.values():
        for text in value if isinstance(value, list) else [value]:
            found = pattern.search(text)
            if found:
                return found.group(0)
    return None


def check_reply(step, obj, schema, state):
    """A step's result from its reply: the schema's fields, then what a schema cannot say
    (a copied placeholder of the shown format is no answer)."""
    fields = check_schema(obj, schema)
    copied = copied_placeholder(fields, schema)
    if copied:
        raise BadReply(f'it repeats the placeholder {copied} of the format instead of text of your own')
    if step == 'F1':
        return fields['summarization']
    if step == 'F2':
        if not fields['positive'] and not fields['negative']:
            raise BadReply('"positive" and "negative" are both empty')
        return fields
    if step == 'F3':
        return fields['latent_preferences']
    profiles = fields['profiles']
    if len(set(profiles)) < len(profiles) or state['op'].strip() in profiles:
        raise BadReply('the new profiles must differ from each other and from the original profile')
    return profiles


REASK = ('Your reply above cannot be used: {reason}. Answer again with only the JSON object '
         'in the format the system message asks for.')

# Where an entity's state keeps each step's result (make_profiles writes the same keys); the
# journal's step lines (--batch-api) name the step.
STATE_KEY = {'F1': 'op', 'F2': 'aspects', 'F3': 'latent', 'F4': 'nps'}


@dataclass
class Turn:
    """The request of one chain step of one entity, and what it has used of its re-asks."""
    step: str
    schema: dict
    messages: list
    max_tokens: int
    reasks: int = 0
    raised: bool = False  # max_tokens already doubled after finish_reason "length"


def new_turn(side, k, source, state, step):
    """The first request of a step, its user message showing the earlier steps' results in `state`."""
    shown = {key: json.dumps(state[key], ensure_ascii=False) for key in ('aspects', 'latent') if key in state}
    if 'op' in state:
        shown['op'] = state['op']
    system, user = step_messages(side, k, source, **shown)[step]
    return Turn(step, step_schema(side, step, k),
                [{'role': 'system', 'content': system}, {'role': 'user', 'content': user}], max_tokens(side, step, k))


def next_turn(turn, text, finish_reason, state, max_reasks):
    """The step's result from a reply, or None after preparing the next request in `turn`:
    a reply cut by max_tokens is asked again once with twice the limit (same messages); an unusable
    one is answered with a correction, at most max_reasks times, then the step fails."""
    if finish_reason == 'length' and not turn.raised:
        turn.raised, turn.max_tokens = True, 2 * turn.max_tokens
        return None
    try:
        return check_reply(turn.step, parse_reply(text), turn.schema, state)
    except BadReply as e:
        reason = str(e)
    if turn.reasks >= max_reasks:
        raise EntityFailed(f'{turn.step}: no usable reply in {turn.reasks + 1} tries, last: {reason}')
    turn.reasks += 1
    turn.messages = turn.messages[:2] + [{'role': 'assistant', 'content': text},
                                         {'role': 'user', 'content': fill(REASK, reason=reason)}]
    return None


def ask_step(session, ep, args, turn, state, usage):
    """One chain step online: ask, check the reply, re-ask (next_turn) until it has the result or gives up."""
    while True:
        text, finish_reason = chat(session, ep, args.model, turn, usage)
        value = next_turn(turn, text, finish_reason, state, args.max_reasks)
        if value is not None:
            return value


def fallback_texts(state, source, has_op, k, max_chars):
    """[OP] + K-1 NPs of an entity; what a failed step left out falls back to the OP
    (and the OP to its side information as text when F1 failed)."""
    op = state.get('op') or (source if has_op else json.dumps(source, ensure_ascii=False)[:max_chars])
    return [op] + (state.get('nps') or [op] * (k - 1))


def entity_record(i, texts, reasons, emb_fallback, state, usage, ep):
    record = {'id': i, 'status': 'fallback' if reasons else 'done', 'op': texts[0], 'nps': texts[1:],
              'usage': usage}
    if reasons:  # what succeeded is kept, so that --retry-fallbacks resumes at the failed step
        record.update(reason=redact('; '.join(reasons), ep.api_key), emb_fallback=emb_fallback,
                      state={key: value for key, value in state.items() if key != 'failed'})
    return record


def new_usage():
    return dict(chat_calls=0, embed_calls=0, prompt_tokens=0, completion_tokens=0, embed_tokens=0)


# ----------------------------------------------------------------------------
# Inputs: per side, OP texts (F1 skipped) or side information (F1 writes the OP)

PREFIX = {'user': 'usr', 'item': 'itm'}  # file-name prefix per side
INPUT_NAMES = ('prf.json', 'prf.pkl', 'side.jsonl')  # per side, the first found is read
PROREC_README = 'https://github.com/BlueGhostYi/ProRec'  # links the ProEx and RLMRec data releases
RLMREC_README = 'https://github.com/HKUDS/RLMRec'


def load_profile_pickle(path):
    """RLMRec's usr_prf.pkl / itm_prf.pkl: a list, or a dict {id: ...}, of {'profile': str,
    'reasoning': str} (a plain string counts as the profile) -> list of OP strings in id order.
    data.safe_load builds only containers, strings, numbers and arrays (pickle runs code otherwise)."""
    data = D.safe_load(path)
    if isinstance(data, dict):
        if sorted(data) != list(range(len(data))):
            raise ValueError(f'{path}: keys must be the ids 0..{len(data) - 1}')
        data = [data[i] for i in range(len(data))]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list or a dict {{id: {{'profile', 'reasoning'}}}}, "
                         f'got {type(data).__name__}')
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


def find_input(args, side):
    """Path of the side's input: the explicit flag, else the first of INPUT_NAMES in the dataset
    folder; None when there is none."""
    given = args.user_input if side == 'user' else args.item_input
    if given:
        return given
    for name in INPUT_NAMES:
        path = os.path.join(args.folder, f'{PREFIX[side]}_{name}')
        if os.path.exists(path):
            return path
    return None


def no_input(args, sides):
    """The error for sides without input: each file looked for, where it comes from, what to run."""
    def names(name):
        return ' / '.join(f'{PREFIX[side]}_{name}' for side in sides)
    root = os.path.dirname(args.folder)
    flags = ' / '.join(f'--{side}-input' for side in sides)
    return (f'no input for the {" and the ".join(side + "s" for side in sides)} of {args.dataset} in '
            f'{args.folder} (and no {flags}); profiles.py reads, per side, the first of these it finds:\n'
            f'  {names("prf.json")}: OP texts, a JSON list of one string per id (as in ml100k/)\n'
            f'  {names("prf.pkl")}: RLMRec\'s OP texts (a pickled list or dict of {{"profile", '
            f'"reasoning"}} per id), from the same release archive as the OP embeddings '
            f'{names("emb_np.pkl")}, linked from the ProRec README ({PROREC_README}) and RLMRec\'s '
            f'README ({RLMREC_README})\n'
            f'  {names("side.jsonl")}: side information for F1 to write the OP from, one JSON object '
            f'per line with "id" (0..n-1) and any fields (the docstring of profiles.py has the format)\n'
            f'Put one of them per side into {args.folder}, then estimate the cost and run:\n'
            f'  python profiles.py --dataset {args.dataset} --data-dir {root} --dry-run\n'
            f'  python profiles.py --dataset {args.dataset} --data-dir {root}')


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
    except D.DataError as e:  # its message names the file
        raise SystemExit(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f'{path}: {type(e).__name__}: {e}') from None
    if not isinstance(sources, list) or not all(isinstance(s, str) and s.strip() for s in sources):
        raise SystemExit(f'{path}: expected one non-empty profile string per id')
    return sources, True


# ----------------------------------------------------------------------------
# Journal, vector store and output files

def fingerprint(args, side, sources, dim):
    """What a journal's records depend on; a resumed run must match it."""
    prompts = json.dumps([PROMPTS, [system_prompt(side, step, args.n_profiles) for step in PROMPTS],
                          SIDE_WORDS[side], FIELD_WORDS], sort_keys=True)
    return {'version': 2, 'side': side, 'profiles': args.n_profiles, 'model': args.model,
            'embed_model': args.embed_model, 'embed_dim': dim, 'n': len(sources),
            'prompts_sha256': hashlib.sha256(prompts.encode()).hexdigest(),
            'inputs_sha256': hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()}


@dataclass
class Entry:
    """Where a finished entity is: its journal line (byte offset) and its row in the vector store."""
    status: str          # 'done' or 'fallback'
    offset: int
    row: int
    emb_fallback: bool


def read_journal(path):
    """Stream the journal -> (header, {id: Entry}, {id: step results}, {batch name: id}).
    A last line cut short by a kill is dropped from the file. A later final line for an id
    replaces an earlier one (fallbacks retried). Step lines (--batch-api) are kept only for ids
    not finished yet; a 'retry' line starts a new set of batches."""
    header, index, steps, batches = None, {}, {}, {}
    with open(path, 'r+b') as f:
        offset = 0
        for line in f:
            if not line.endswith(b'\n'):
                f.truncate(offset)  # the line was never complete: it does not count
                break
            if line.strip():
                obj = json.loads(line)
                if header is None:
                    if 'header' not in obj:
                        raise SystemExit(f'{path}: not a profiles journal (no header line)')
                    header = obj['header']
                elif 'status' in obj:
                    index[obj['id']] = Entry(obj['status'], offset, obj['row'], obj.get('emb_fallback', False))
                    steps.pop(obj['id'], None)
                elif 'step' in obj:
                    state = steps.setdefault(obj['id'], {})
                    state.update({'failed': obj['failed']} if 'failed' in obj else {STATE_KEY[obj['step']]: obj['value']})
                elif 'batch' in obj:
                    batches[obj['batch']['name']] = obj['batch']['id']
                elif 'retry' in obj:
                    batches, steps = {}, {}
            offset += len(line)
    return header, index, steps, batches


def read_record(f, entry):
    f.seek(entry.offset)
    return json.loads(f.readline())


def append_lines(f, objs):
    """Lines count only once they are on disk. f: opened 'ab'. Returns the first line's offset."""
    offset = os.fstat(f.fileno()).st_size
    f.write(''.join(json.dumps(obj, ensure_ascii=False) + '\n' for obj in objs).encode('utf-8'))
    f.flush()
    os.fsync(f.fileno())
    return offset


class VectorStore:
    """Append-only float32 file, one [K, d] block per finished entity; journal lines name the row.
    A block cut short by a kill is cut off; a block no journal line names is never read."""

    def __init__(self, path, k, dim):
        self.path, self.shape = path, (k, dim)
        self.block = k * dim * 4
        size = os.path.getsize(path) if os.path.exists(path) else 0
        self.rows = size // self.block
        with open(path, 'ab') as f:
            f.truncate(self.rows * self.block)
        self.f = open(path, 'ab')

    def append(self, c):
        """c: float32 [K, d] -> its row."""
        self.f.write(np.ascontiguousarray(c, dtype='<f4').tobytes())
        self.f.flush()
        os.fsync(self.f.fileno())
        self.rows += 1
        return self.rows - 1

    def read(self, rows, view=None):
        """float32 [len(rows), K, d], or [len(rows), d] of one view; plain reads, block by block (a memory
        map would count the whole file in the process's resident memory)."""
        k, dim = self.shape
        out = np.empty((len(rows), dim) if view is not None else (len(rows), k, dim), np.float32)
        with open(self.path, 'rb') as f:
            for n, row in enumerate(rows):
                f.seek((row * k + (view or 0)) * dim * 4)
                f.readinto(out[n])
        return out

    def close(self):
        self.f.close()


def output_names(side, k, has_op):
    """Texts first (view 0 only when F1 wrote the OPs), then the K embedding files."""
    p = PREFIX[side]
    names = [] if has_op else [f'{p}_prf.json']
    names += [f'{p}_prf_{j}.json' for j in range(1, k)]
    return names + [f'{p}_emb_np.pkl'] + [f'{p}_emb_np_{j}.pkl' for j in range(1, k)]


def write_outputs(args, job):
    """The official files from a complete journal, one view at a time; a file whose bytes already
    match is left alone. Embedding rows of an emb_fallback entity are the mean of the others."""
    side, k, n, index = job['side'], args.n_profiles, len(job['sources']), job['index']
    names, written = output_names(side, k, job['has_op']), []
    with open(job['journal'], 'rb') as f:
        for name, view in zip(names, range(0 if not job['has_op'] else 1, k)):
            texts = [([r['op']] + r['nps'])[view] for r in (read_record(f, index[i]) for i in range(n))]
            blob = json.dumps(texts, ensure_ascii=False, indent=0).encode('utf-8')
            if write_if_changed(os.path.join(args.out_dir, name), lambda out: out.write(blob)):
                written.append(name)
    rows = np.array([index[i].row for i in range(n)])
    fallback = np.array([index[i].emb_fallback for i in range(n)])
    for name, view in zip(names[-k:], range(k)):
        c = job['store'].read(rows, view)                       # [n, d], one view at a time
        if fallback.any() and not fallback.all():
            c[fallback] = c[~fallback].mean(0)
        # protocol 5 writes the array's buffer without a copy (protocol 4 copies it to bytes first)
        if write_if_changed(os.path.join(args.out_dir, name), lambda out: pickle.dump(c, out, protocol=5)):
            written.append(name)
    return written


# ----------------------------------------------------------------------------
# One side: open it (or refuse), start its journal, journal each entity, write its files and report

def open_side(args, side, path):
    """Load the side's input (path) and its journal if any; refuse a fresh run that would overwrite files."""
    p, k = PREFIX[side], args.n_profiles
    sources, has_op = load_inputs(path)
    job = dict(side=side, sources=sources, has_op=has_op, index={}, steps={}, batches={}, header=None,
               journal=os.path.join(args.out_dir, f'{p}_prf_journal.jsonl'),
               store_path=os.path.join(args.out_dir, f'{p}_emb_store.f32'),
               ids=range(min(len(sources), args.limit) if args.limit else len(sources)))
    print(f'{side}: {len(sources)} from {path} ({"OP given" if has_op else "side information, F1 writes the OP"}); '
          f'journal {job["journal"]}')
    if os.path.exists(job['journal']):
        job['header'], job['index'], job['steps'], job['batches'] = read_journal(job['journal'])
    existing = [name for name in output_names(side, k, has_op) if os.path.exists(os.path.join(args.out_dir, name))]
    if job['header'] is None and existing and not args.overwrite:
        message = f'refusing to overwrite {existing} in {args.out_dir}: pass --overwrite, or another --out-dir'
        if not args.dry_run:
            raise SystemExit(message)
        print(f'note: {message}')
    if job['header'] is not None:  # a resumed run must have the configuration its journal was written with
        expected = fingerprint(args, side, sources, args.embed_dim or job['header']['embed_dim'])
        changed = [key for key in expected if expected[key] != job['header'].get(key)]
        if changed:
            raise SystemExit(f'{job["journal"]} was written with another {", ".join(changed)}: '
                             f'delete it and {job["store_path"]} to start over, or choose another --out-dir')
    redo = ('fallback',) if args.retry_fallbacks else ()
    job['todo'] = [i for i in job['ids'] if i not in job['index'] or job['index'][i].status in redo]
    return job


def start_journal(args, job, ep):
    """A fresh run fixes its configuration (and the embedding dimension) in the journal's first line."""
    if job['header'] is None:
        job['header'] = fingerprint(args, job['side'], job['sources'], args.embed_dim or probe_dim(ep.embed, args))
        os.makedirs(args.out_dir, exist_ok=True)
        with open(job['journal'], 'ab') as f:
            append_lines(f, [{'header': job['header']}])
    job['dim'] = job['header']['embed_dim']
    job['store'] = VectorStore(job['store_path'], args.n_profiles, job['dim'])


def initial_state(job, f, i):
    """What is known of entity i: the given OP, the steps a killed --batch-api run journaled, or the
    steps it had finished before a fallback (--retry-fallbacks). f: the journal, opened 'rb'."""
    if i in job['index']:
        state = read_record(f, job['index'][i]).get('state', {})
    else:
        state = dict(job['steps'].get(i, {}))
    if job['has_op']:
        state['op'] = job['sources'][i]
    return state


def finish_entity(job, journal, record, c, stats):
    """The vectors to the store, then the record (naming their row) to the journal."""
    record['row'] = job['store'].append(c)
    offset = append_lines(journal, [record])
    job['index'][record['id']] = Entry(record['status'], offset, record['row'], record.get('emb_fallback', False))
    for key in stats['usage']:
        stats['usage'][key] += record['usage'][key]
    if record['status'] == 'fallback':
        stats['fallbacks'][record['id']] = record['reason']


def finish_side(args, job):
    """The official files once every entity is finished, and the report. Returns the exit status."""
    side, index, n = job['side'], job['index'], len(job['sources'])
    finished = sum(i in index for i in range(n))
    fallbacks = [i for i in range(n) if i in index and index[i].status == 'fallback']
    if finished == n:
        written = write_outputs(args, job)
        print(f'{side}: {n}/{n} finished ({len(fallbacks)} with fallback), '
              + (f'wrote {written}' if written else 'files up to date') + f'; peak memory {peak_memory_mb():.0f} MB')
    elif args.limit:
        print(f'{side}: ids 0..{len(job["ids"]) - 1} finished (--limit {args.limit}); the output files need all '
              f'{n} ids, so none was written: run without --limit to finish the other {n - finished}')
    else:
        print(f'{side}: {finished}/{n} finished, files not written (rerun the same command to continue)')
    if args.report and finished:
        report_side(args, job, fallbacks, finished == n)
    if fallbacks:
        print(f'{side}: {len(fallbacks)} entities used a fallback (ids {fallbacks[:10]}...); '
              f'--retry-fallbacks retries them')
    return 3 if fallbacks else 0 if finished == n or args.limit else 1


def report_side(args, job, fallbacks, complete):
    """Cosines over the entities done without fallback (a fallback's views coincide)."""
    index = job['index']
    done = [i for i in sorted(index) if index[i].status == 'done']
    rows = [index[i].row for i in done]
    chunks = (job['store'].read(rows[start:start + 256]) for start in range(0, len(rows), 256))  # ~13 MB each
    report = dict(cosine_report(chunks) if done else {'n': 0}, complete=complete, fallbacks=len(fallbacks))
    print(f'{job["side"]} report: mean cosine OP-vs-NP {report.get("op_vs_np")}, NP-vs-NP {report.get("np_vs_np")} '
          f'over {report["n"]} entities ({len(fallbacks)} with fallback left out)')
    path = os.path.join(args.out_dir, f'{PREFIX[job["side"]]}_prf_report.json')
    blob = json.dumps(report, indent=1).encode()
    write_atomic(path, lambda f: f.write(blob))


def cosine_report(chunks):
    """Mean cosine OP-vs-NP and NP-vs-NP over entities (the paper's Fig. 4(a) claim), from
    arrays [n, K, d] (one, or chunks of the store)."""
    n, op_np, np_np, pairs = 0, 0.0, 0.0, 0
    for c in [chunks] if isinstance(chunks, np.ndarray) else chunks:
        k = c.shape[1]
        x = np.asarray(c, dtype=np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-12)
        s = np.einsum('nkd,njd->nkj', x, x)  # [n, K, K] cosine between the K views of each entity
        a, b = np.triu_indices(k - 1, 1)     # the pairs j < k of NPs
        n, op_np, pairs = n + len(x), op_np + s[:, 0, 1:].sum(0), len(a)
        np_np += s[:, 1:, 1:][:, a, b].sum()
    op_np = np.atleast_1d(op_np)
    return {'n': int(n), 'op_vs_np': float(op_np.sum() / max(n * len(op_np), 1)),
            'op_vs_np_per_k': [float(x / max(n, 1)) for x in op_np],
            'np_vs_np': float(np_np / max(n * pairs, 1)) if pairs else None}


# ----------------------------------------------------------------------------
# Command line
#
# Defaults (every one can be set from the command line)

K = 4                                   # profiles per entity: the OP and K-1 NPs (paper: 4)
BASE_URL = 'https://api.openai.com/v1'  # OpenAI-compatible root, /v1 included
MODEL = 'gpt-3.5-turbo'                 # chat model of the paper
EMBED_MODEL = 'text-embedding-ada-002'  # embedding model of the paper (d = 1536)
API_KEY_ENV = 'OPENAI_API_KEY'          # name of the env var holding the key
CONCURRENCY = 8                         # entities in flight (each has one request open at a time)
CONNECT_TIMEOUT = 10.0                  # seconds to open a connection
READ_TIMEOUT = 120.0                    # seconds the server may stay silent while answering
MAX_ATTEMPTS = 6                        # attempts per request on 429, 5xx, network errors, bad bodies
BACKOFF = 2.0                           # first retry delay (s); doubles per attempt, with jitter
MAX_REASKS = 2                          # re-asks when a reply is not the requested JSON
MAX_INPUT_CHARS = 8000                  # embedding inputs are cut to this after an HTTP 400 (~2k tokens)
POLL_EVERY = 30.0                       # seconds between Batch API status checks
BATCH_MAX = 50000                       # requests per Batch API job (the OpenAI limit)
DATASET_FOLDERS = {'book': 'amazon'}    # dataset name -> folder, where they differ


def parse_args(argv=None):
    # eval.ArgumentParser: a bad value or an unknown flag is one `error:` line naming what is valid;
    # a mistyped or abbreviated flag fails, it is not guessed. Every range is checked by its type.
    ap = ArgumentParser(description='ProEx profile construction: F1-F4 LLM chain and embeddings '
                        '(paper Sec. 2.3.1, Eq. 4-5). See the module docstring for files and policies.')
    ap.add_argument('--dataset', required=True,
                    help='dataset name, i.e. a folder under --data-dir; "book" reads the folder "amazon"')
    ap.add_argument('--data-dir', default=None, help='folder holding the datasets (default: $PROEX_DATA, else ./data)')
    ap.add_argument('--out-dir', default=None, help='where outputs and journal go (default: the dataset folder)')
    ap.add_argument('--side', choices=['user', 'item', 'both'], default='both',
                    help='which entities to profile (default %(default)s)')
    ap.add_argument('--user-input', default=None,
                    help='user input file: .json list of original profiles (OP), .pkl as RLMRec\'s, or .jsonl '
                    'side information (default: usr_prf.json, usr_prf.pkl or usr_side.jsonl in the '
                    'dataset folder, the first found)')
    ap.add_argument('--item-input', default=None,
                    help='item input file (same formats as --user-input; default: itm_prf.json, '
                    'itm_prf.pkl or itm_side.jsonl in the dataset folder)')
    ap.add_argument('--base-url', default=BASE_URL, help='OpenAI-compatible API root including /v1, e.g. '
                    'http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama) (default %(default)s)')
    ap.add_argument('--model', default=MODEL,
                    help='chat model for the prompts F1-F4 (default %(default)s, the paper\'s)')
    ap.add_argument('--embed-model', default=EMBED_MODEL, help='embedding model for all K profiles (Eq. 5; default '
                    '%(default)s, the paper\'s)')
    ap.add_argument('--embed-base-url', default=None, help='another server for /embeddings (default: --base-url)')
    ap.add_argument('--embed-api-key-env', default=None, help='environment variable holding its key '
                    '(default: --api-key-env)')
    ap.add_argument('--embed-dim', type=int_range(0), default=0,
                    help='expected embedding dimension (default 0: ask the server once)')
    ap.add_argument('--api-key-env', default=API_KEY_ENV, help='environment variable holding the API key '
                    '(may be unset for local servers; default %(default)s)')
    ap.add_argument('--n-profiles', type=int_range(2), default=K, metavar='K',
                    help='K, profiles per entity: the OP and K-1 new ones (default %(default)s)')
    ap.add_argument('--concurrency', type=int_range(1), default=CONCURRENCY,
                    help='entities processed in parallel (default %(default)s)')
    ap.add_argument('--limit', type=int_range(0), default=0,
                    help='only ids 0..N-1 (default 0: all); writes no output file (the files need every id)')
    ap.add_argument('--connect-timeout', type=float_range(0, lo_open=True), default=CONNECT_TIMEOUT,
                    help='seconds to open a connection (default %(default)s)')
    ap.add_argument('--timeout', type=float_range(0, lo_open=True), default=READ_TIMEOUT,
                    help='seconds the server may stay silent while answering (read timeout; default %(default)s)')
    ap.add_argument('--max-attempts', type=int_range(1), default=MAX_ATTEMPTS, help='attempts per request on 429, 5xx, '
                    'network errors or malformed bodies, then the entity falls back (default %(default)s)')
    ap.add_argument('--backoff', type=float_range(0), default=BACKOFF,
                    help='first retry delay in seconds (doubles, jittered; default %(default)s)')
    ap.add_argument('--max-reasks', type=int_range(0), default=MAX_REASKS,
                    help='re-asks when a reply is not the requested JSON, then the entity falls back (default %(default)s)')
    ap.add_argument('--max-input-chars', type=int_range(1), default=MAX_INPUT_CHARS, help='embedding inputs are cut to '
                    'this many characters after an HTTP 400, and sent once more (default %(default)s)')
    ap.add_argument('--retry-fallbacks', action='store_true', help='redo the entities that used a fallback, '
                    'from the step that failed')
    ap.add_argument('--json-mode', action='store_true', help='send response_format json_object (if the server has it)')
    ap.add_argument('--json-schema', action='store_true', help='send response_format json_schema with each step\'s '
                    'schema (structured outputs: OpenAI, vLLM, Ollama, llama.cpp); dropped if the server answers 400')
    ap.add_argument('--batch-api', action='store_true', help='send each step as OpenAI Batch jobs '
                    '(/v1/files, /v1/batches): half the price, results within 24 h; resumable')
    ap.add_argument('--batch-size', type=int_range(1), default=BATCH_MAX,
                    help='requests per Batch job (default %(default)s, the OpenAI limit)')
    ap.add_argument('--poll-every', type=float_range(0), default=POLL_EVERY,
                    help='seconds between Batch status checks (default %(default)s)')
    ap.add_argument('--overwrite', action='store_true', help='let a fresh run replace existing output files')
    ap.add_argument('--report', action='store_true', help='print and write <side>_prf_report.json: '
                    'mean cosine OP-vs-NP and NP-vs-NP, fallbacks')
    ap.add_argument('--dry-run', action='store_true', help='print the four prompts for one entity and estimate '
                    'calls, tokens, cost and time; no request is sent')
    ap.add_argument('--price-in', type=float_range(0), default=0.0,
                    help='dry run: $ per million prompt tokens (default %(default)s)')
    ap.add_argument('--price-out', type=float_range(0), default=0.0,
                    help='dry run: $ per million completion tokens (default %(default)s)')
    ap.add_argument('--price-embed', type=float_range(0), default=0.0,
                    help='dry run: $ per million embedding tokens (default %(default)s)')
    args = ap.parse_args(argv)
    data_dir = args.data_dir or os.environ.get('PROEX_DATA') or './data'
    args.folder = os.path.join(data_dir, DATASET_FOLDERS.get(args.dataset, args.dataset))
    args.out_dir = args.out_dir or args.folder
    return args


def main(argv=None):
    args = parse_args(argv)
    print('config:', json.dumps(vars(args)))  # only the key's variable name is in args
    for env in dict.fromkeys([args.api_key_env, args.embed_api_key_env or args.api_key_env]):
        print(f'API key: ${env} is {"set" if os.environ.get(env) else "not set"}')
    ep = Endpoint(args.base_url, os.environ.get(args.api_key_env, ''), args, args.api_key_env)
    embed_env = args.embed_api_key_env or args.api_key_env
    if (args.embed_base_url or args.base_url) != args.base_url or embed_env != args.api_key_env:
        ep.embed = Endpoint(args.embed_base_url or args.base_url, os.environ.get(embed_env, ''), args, embed_env)
    status, jobs = 0, []
    try:
        sides = ['user', 'item'] if args.side == 'both' else [args.side]
        inputs = {side: find_input(args, side) for side in sides}
        missing = [side for side in sides if inputs[side] is None]
        if missing:
            raise SystemExit(no_input(args, missing))
        jobs = [open_side(args, side, inputs[side]) for side in sides]
        for job in jobs if not args.dry_run else []:  # every side checked before any starts
            start_journal(args, job, ep)
        for job in jobs:
            if args.dry_run:
                dry_run(args, job)
                continue
            (run_side_batch if args.batch_api else run_side)(args, job, ep)
            status = max(status, finish_side(args, job))
    except Fatal as e:
        print(redact(redact(str(e), ep.api_key), ep.embed.api_key), file=sys.stderr)  # 'error: <URL> (step ...) ...'
        return 1
    except SystemExit as e:  # refusals and input errors: a message and exit status 2
        if isinstance(e.code, str):
            print(f'error: {e.code}', file=sys.stderr)
            return 2
        raise
    finally:
        for job in jobs:
            if 'store' in job:
                job['store'].close()
    return status


# ----------------------------------------------------------------------------
# HTTP: requests with connect and read timeouts, bounded retries, backoff + jitter, fail fast;
# the chat request, the embedding rows (the request is `embed`, Eq. 5, up front), the
# response_format fallback and the dimension probe

BACKOFF_MAX = 120.0                     # cap of our own retry delay (s)
RETRY_AFTER_MAX = 600.0                 # cap of a server's Retry-After (s)
FAIL_FAST = 3                           # consecutive identical permanent failures that stop the run
FAIL_FAST_DELAY = 1.0                   # cap of the retry delay after such a failure (s)


class Endpoint:
    """The server, the retry policy, and what all threads share: the fail-fast count and the warnings."""

    def __init__(self, base_url, api_key, args, key_env):
        self.base_url, self.api_key = base_url.rstrip('/'), api_key
        self.embed = self  # the Endpoint for /embeddings: another one with --embed-base-url
        self.timeout = (args.connect_timeout, args.timeout)  # requests: (connect, read)
        self.max_attempts, self.backoff, self.json_mode = args.max_attempts, args.backoff, args.json_mode
        self.response_format = 'json_schema' if args.json_schema else 'json_object' if args.json_mode else None
        self.key_env = key_env
        self.lock = threading.Lock()
        self.last_failure, self.repeats = None, 0  # the latest permanent-looking failure, times in a row
        self.stopped = None                        # the message that stopped the run
        self.warned = set()

    def __repr__(self):
        return f'Endpoint({self.base_url!r})'  # never the key

    def check(self):
        if self.stopped:
            raise Fatal(self.stopped)

    def succeeded(self):
        with self.lock:
            self.last_failure, self.repeats = None, 0

    def failed_for_good(self, kind, message):
        """A failure that will not go away by itself; FAIL_FAST identical ones in a row stop the run."""
        with self.lock:
            self.repeats = self.repeats + 1 if kind == self.last_failure else 1
            self.last_failure = kind
            if self.repeats >= FAIL_FAST and not self.stopped:
                self.stopped = redact(message, self.api_key)
        self.check()

    def warn_once(self, key, message):
        with self.lock:
            if key in self.warned:
                return
            self.warned.add(key)
        print(f'warning: {message}', file=sys.stderr, flush=True)


PERMANENT_FIX = {  # HTTP status -> what the user can do about it
    401: 'check the key in ${env}', 403: 'check the key in ${env} and its access to this model',
    404: 'check --base-url (it includes /v1) and the model name', 429: 'the account has no quota left',
}


def request(session, ep, method, route, parse, step, refused=None, **kwargs):
    """{method} {base_url}/{route} -> parse(response). Retries 408/409/429, 5xx, network errors and
    bodies parse() rejects; other 4xx, and answers refused(status, message) marks, raise Rejected;
    failures that will not go away (no connection, 401/403/404, 429 insufficient_quota) stop the run
    after FAIL_FAST in a row (Fatal)."""
    url = f'{ep.base_url}/{route}'
    headers = {'Authorization': f'Bearer {ep.api_key}'} if ep.api_key else {}
    reason = ''
    for attempt in range(1, ep.max_attempts + 1):
        ep.check()
        wait, delay = 0.0, backoff_delay(attempt, ep.backoff)
        try:
            r = session.request(method, url, headers=headers, timeout=ep.timeout, **kwargs)
        except requests.RequestException as e:  # refused, reset, timed out
            reason = network_reason(e)
            if cannot_connect(e):
                ep.failed_for_good('connect', f'error: cannot connect to {url} (step {step}): {reason}; '
                                   f'is the server running and is --base-url right?')
                delay = min(delay, FAIL_FAST_DELAY)
        else:
            status, message = r.status_code, error_message(r)
            if refused and status != 200 and refused(status, message):
                raise Rejected(redact(f'{step}: HTTP {status} from {url}: {message}', ep.api_key))
            if status == 200:
                try:
                    result = parse(r)
                except (ValueError, KeyError, IndexError, TypeError) as e:  # malformed or wrong shape
                    reason = f'unusable response ({type(e).__name__}: {str(e)[:200]})'
                else:
                    ep.succeeded()
                    return result
            elif status in (401, 403, 404) or (status == 429 and 'insufficient_quota' in r.text):
                fix = PERMANENT_FIX[status].replace('{env}', ep.key_env)
                ep.failed_for_good(f'HTTP {status}', f'error: {url} (step {step}) answered HTTP {status}: '
                                   f'{message}; {fix}')
                reason, delay = f'HTTP {status}: {message}', min(delay, FAIL_FAST_DELAY)
            elif status in (408, 409, 429) or status >= 500:
                reason, wait = f'HTTP {status}', retry_after_seconds(r.headers)
                ep.succeeded()  # the server is there and may recover
            else:
                raise Rejected(redact(f'{step}: HTTP {status} from {url}: {message}', ep.api_key))
        if attempt < ep.max_attempts:
            time.sleep(max(wait, delay))  # honour Retry-After
    raise EntityFailed(redact(f'{step}: {ep.max_attempts} attempts failed, last: {reason}', ep.api_key))


def cannot_connect(e):
    """No connection at all (refused, unknown host, connect timeout), as opposed to a broken one."""
    return isinstance(e, requests.ConnectTimeout) or (
        isinstance(e, requests.ConnectionError)
        and any(s in str(e) for s in ('NewConnectionError', 'NameResolutionError', 'Connection refused')))


def network_reason(e):
    """The exception's name and its errno text, e.g. 'ConnectionError (Connection refused)'."""
    m = re.search(r'\[Errno -?\d+\] ([^\'"()]+)', str(e))
    return type(e).__name__ + (f' ({m.group(1).strip()})' if m else '')


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


def redact(text, api_key):
    """Remove the API key, and anything shaped like an OpenAI key, from a message."""
    if api_key:
        text = text.replace(api_key, '***')
    return re.sub(r'sk-[A-Za-z0-9_\-*]{4,}', 'sk-***', text)


def count_usage(ep, usage, body_usage, route):
    """Add a reply's `usage` to the counts; warn once when the server sends none."""
    usage['chat_calls' if route == 'chat' else 'embed_calls'] += 1
    if not isinstance(body_usage, dict):
        ep.warn_once(route, f'{ep.base_url} sends no "usage" with its {route} replies: '
                            f'their tokens are not counted')
        return
    keys = [('prompt_tokens', 'prompt_tokens'), ('completion_tokens', 'completion_tokens')] \
        if route == 'chat' else [('embed_tokens', 'prompt_tokens')]
    for ours, theirs in keys:
        usage[ours] += int(body_usage.get(theirs) or 0)


def chat_payload(model, turn, response_format):
    """A chat request; response_format: None, 'json_object', 'json_schema' (OpenAI, vLLM, Ollama,
    llama.cpp's llama-server) or 'json_object_schema' (llama-cpp-python's form), with the step's schema."""
    payload = {'model': model, 'messages': turn.messages, 'max_tokens': turn.max_tokens}
    if response_format == 'json_schema':
        payload['response_format'] = {'type': 'json_schema',
                                      'json_schema': {'name': turn.step, 'schema': turn.schema, 'strict': True}}
    elif response_format == 'json_object_schema':
        payload['response_format'] = {'type': 'json_object', 'schema': turn.schema}
    elif response_format == 'json_object':
        payload['response_format'] = {'type': 'json_object'}
    return payload


def refuses_format(status, message):
    """A server's answer that says it does not take a schema in response_format: 400, 422 or a 5xx
    (llama-cpp-python answers its validation error with 500) whose message names it."""
    return (status in (400, 422) or status >= 500) and re.search(r'response_format|schema', message) is not None


def chat_fields(body):
    """A chat completion body -> (reply text, finish_reason, usage)."""
    choice = body['choices'][0]
    text = choice['message']['content']
    if not isinstance(text, str):
        raise TypeError('message content is not a string')
    return text, choice.get('finish_reason'), body.get('usage')


def chat(session, ep, model, turn, usage):
    """One chat completion -> (reply text, finish_reason) (OpenAI wire format). A server that refuses
    the schema's response_format (refuses_format) is asked in the next weaker form from then on."""
    response_format = ep.response_format
    schema_sent = response_format in ('json_schema', 'json_object_schema')
    try:
        text, finish_reason, body_usage = request(session, ep, 'POST', 'chat/completions',
                                                  lambda r: chat_fields(r.json()), turn.step,
                                                  refused=refuses_format if schema_sent else None,
                                                  json=chat_payload(model, turn, response_format))
    except Rejected as e:
        if not schema_sent or not re.search(r'response_format|schema', str(e)):
            raise  # refused for another reason (a too long input, ...)
        with ep.lock:
            if ep.response_format == response_format:  # the next weaker form
                ep.response_format = 'json_object_schema' if response_format == 'json_schema' \
                    else 'json_object' if ep.json_mode else None
        ep.warn_once(response_format, f'{ep.base_url} refused response_format {response_format} ({e}); '
                                      f'asking with {ep.response_format} from now on')
        return chat(session, ep, model, turn, usage)
    count_usage(ep, usage, body_usage, 'chat')
    return text, finish_reason


def embedding_rows(body, n, dim):
    """An embeddings body -> (float32 [n, dim], usage, pooled); rows in input order, whatever order they
    came in. Token-level vectors (one per token: llama.cpp without pooling) are mean-pooled."""
    rows = sorted(body['data'], key=lambda row: row['index'])
    if [row['index'] for row in rows] != list(range(n)):
        raise ValueError(f'{len(rows)} embeddings for {n} inputs')
    vectors = [np.asarray(row['embedding'], dtype=np.float32) for row in rows]
    pooled = any(v.ndim == 2 for v in vectors)
    c = np.stack([v.mean(0) if v.ndim == 2 else v for v in vectors])  # [n, d]
    if c.ndim != 2 or (dim and c.shape[1] != dim):
        raise ValueError(f'embedding dimension {c.shape[1] if c.ndim == 2 else c.shape}, expected {dim}')
    if not np.isfinite(c).all():
        raise ValueError('non-finite embedding')
    return c, body.get('usage'), pooled


def pooled_warning(ep, rows):
    """(c, usage, pooled) -> (c, usage), warning once when the server sent token-level vectors."""
    c, usage, pooled = rows
    if pooled:
        ep.warn_once('pooled', f'{ep.base_url}/embeddings returns one vector per token; profiles.py uses their '
                               f'mean. Let the server pool them (llama.cpp\'s llama-server: --pooling mean; the '
                               f'llama-cpp-python server has no such option) or serve an embedding model')
    return c, usage


def probe_dim(ep, args):
    """The embedding model's dimension, from one request (when --embed-dim is not given)."""
    try:
        with requests.Session() as session:
            return int(embed(session, ep, args, ['dimension probe'], 0, new_usage())[0].shape[1])
    except EntityFailed as e:
        raise Fatal(f'error: cannot get the embedding dimension from {ep.base_url}/embeddings: {e}') from None


# ----------------------------------------------------------------------------
# --batch-api: each step for all entities as OpenAI Batch jobs (half price, results within 24 h)

def run_side_batch(args, job, ep):
    """F1 (when needed), F2, F3, F4 for every entity to do, then the embeddings: one round of Batch
    jobs per try, the same re-ask rules as online. Step results and batch ids are journaled, so a
    killed run resumes without resubmitting a recorded batch; the records equal the online mode's."""
    k, todo, stats = args.n_profiles, job['todo'], new_stats()
    with open(job['journal'], 'rb') as past:
        states = {i: initial_state(job, past, i) for i in todo}
    with open(job['journal'], 'ab') as journal, requests.Session() as session:
        if args.retry_fallbacks and any(i in job['index'] for i in todo):
            append_lines(journal, [{'retry': True}])  # earlier batches belong to earlier tries
            job['batches'] = {}
        for step in PROMPTS:  # F1..F4; a step every entity's state holds (F1 with the OP given) sends nothing
            batch_step(session, ep, args, job, journal, step, states, stats['usage'])
        texts = {i: fallback_texts(states[i], job['sources'][i], job['has_op'], k, args.max_input_chars)
                 for i in todo}
        vectors, notes = batch_embeddings(session, ep.embed, args, job, journal, texts, stats['usage'])
        for i in todo:
            reasons = [f'{states[i]["failed"]}; new profiles fall back to the OP'] if 'failed' in states[i] else []
            reasons += [notes[i]] if i in notes else []
            c = vectors.get(i)
            emb_fallback = c is None
            if emb_fallback:
                c = np.zeros((k, job['dim']), np.float32)
            record = entity_record(i, texts[i], reasons, emb_fallback, states[i], new_usage(), ep)
            finish_entity(job, journal, record, c, stats)
            print_progress(job, stats)
    print_summary(job, stats)


def batch_step(session, ep, args, job, journal, step, states, usage):
    """One chain step for every entity still in the chain; rounds of batches until each has a result
    or has failed (the failure is journaled as the step's result)."""
    side, k, key = job['side'], args.n_profiles, STATE_KEY[step]
    pending = [i for i in job['todo'] if key not in states[i] and 'failed' not in states[i]]
    turns = {i: new_turn(side, k, job['sources'][i], states[i], step) for i in pending}
    for round_ in range(args.max_reasks + 2):  # first try, one longer try, the re-asks
        if not pending:
            return
        bodies = {i: chat_payload(args.model, turns[i], ep.response_format) for i in pending}
        results = run_batches(session, ep, args, job, journal, f'{step}-{round_}', 'chat/completions', bodies)
        lines, still = [], []
        for i in pending:
            try:
                value = batch_reply(results.get(i), turns[i], step, states[i], args, ep, usage)
            except EntityFailed as e:
                states[i]['failed'] = redact(str(e), ep.api_key)
                lines.append({'id': i, 'step': step, 'failed': states[i]['failed']})
                continue
            if value is None:
                still.append(i)
            else:
                states[i][key] = value
                lines.append({'id': i, 'step': step, 'value': value})
        append_lines(journal, lines)
        pending = still
    for i in pending:
        states[i]['failed'] = f'{step}: no usable reply in {args.max_reasks + 2} batch rounds'
        append_lines(journal, [{'id': i, 'step': step, 'failed': states[i]['failed']}])


def batch_reply(result, turn, step, state, args, ep, usage):
    """A batch result line -> next_turn; a transient error (429, 5xx, missing line) uses a re-ask."""
    status, body = result or (None, None)
    if status == 200:
        try:
            text, finish_reason, body_usage = chat_fields(body)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            text, finish_reason, body_usage = f'(unusable response: {type(e).__name__})', None, None
        count_usage(ep, usage, body_usage, 'chat')
        return next_turn(turn, text, finish_reason, state, args.max_reasks)
    if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
        raise Rejected(f'{step}: HTTP {status} in the batch results: {batch_error(body)}')
    if turn.reasks >= args.max_reasks:
        raise EntityFailed(f'{step}: no result in {turn.reasks + 1} batch rounds, last: HTTP {status}')
    turn.reasks += 1
    return None


def batch_embeddings(session, ep, args, job, journal, texts, usage):
    """f_text for all K profiles of every entity (Eq. 5): one request per entity; an HTTP 400 is sent
    again once with the inputs cut to --max-input-chars, anything else once as it was.
    -> ({id: [K, d]}, {id: note for a cut input or a fallback})."""
    inputs, vectors, notes, errors = dict(texts), {}, {}, {}
    pending = list(texts)
    for round_ in range(2):
        bodies = {i: {'model': args.embed_model, 'input': inputs[i]} for i in pending}
        results = run_batches(session, ep, args, job, journal, f'embeddings-{round_}', 'embeddings', bodies)
        still = []
        for i in pending:
            status, body = results.get(i) or (None, None)
            try:
                if status == 200:
                    vectors[i], body_usage = pooled_warning(ep, embedding_rows(body, len(inputs[i]), job['dim']))
                    count_usage(ep, usage, body_usage, 'embeddings')
                    continue
                errors[i] = f'embeddings: HTTP {status} in the batch results: {batch_error(body)}'
            except (ValueError, KeyError, IndexError, TypeError) as e:
                errors[i] = f'embeddings: unusable response ({type(e).__name__}: {str(e)[:100]})'
            cut = [t[:args.max_input_chars] for t in inputs[i]]
            if status == 400 and cut != inputs[i]:
                inputs[i], notes[i] = cut, f'embedding inputs cut to {args.max_input_chars} characters after: {errors[i]}'
            still.append(i)
        pending = still
    for i in pending:
        notes[i] = f'{errors[i]}; rows fall back to the mean embedding of the side'
    return vectors, notes


def batch_error(body):
    try:
        return str(body['error']['message'])[:300]
    except (KeyError, TypeError):
        return str(body)[:300]


def run_batches(session, ep, args, job, journal, name, route, bodies):
    """Requests {id: body} as Batch jobs of at most --batch-size requests -> {id: (status, body)}."""
    ids, results = sorted(bodies), {}
    for part, start in enumerate(range(0, len(ids), args.batch_size)):
        chunk = {i: bodies[i] for i in ids[start:start + args.batch_size]}
        results.update(run_batch(session, ep, args, job, journal, f'{name}-{part}', route, chunk))
    return results


def run_batch(session, ep, args, job, journal, name, route, bodies):
    """One Batch job: upload the JSONL of requests, create the batch (its id journaled before anything
    waits on it), poll until it ends, download its output and error files -> {id: (status, body)}."""
    side, step = job['side'], name.split('-')[0]
    batch_id = job['batches'].get(name)
    if batch_id is None:
        lines = ''.join(json.dumps({'custom_id': f'{side}-{i}', 'method': 'POST', 'url': f'/v1/{route}',
                                    'body': body}, ensure_ascii=False) + '\n' for i, body in bodies.items())
        file_id = request(session, ep, 'POST', 'files', lambda r: str(r.json()['id']), step,
                          files={'file': (f'{side}-{name}.jsonl', lines.encode('utf-8'), 'application/jsonl')},
                          data={'purpose': 'batch'})
        batch_id = request(session, ep, 'POST', 'batches', lambda r: str(r.json()['id']), step,
                           json={'input_file_id': file_id, 'endpoint': f'/v1/{route}', 'completion_window': '24h'})
        append_lines(journal, [{'batch': {'name': name, 'id': batch_id}}])
        job['batches'][name] = batch_id
    print(f'{side}: batch {name} ({len(bodies)} requests) is {batch_id}', flush=True)
    batch = wait_for_batch(session, ep, args, batch_id, step)
    results = {}
    for key in ('output_file_id', 'error_file_id'):
        if batch.get(key):
            content = request(session, ep, 'GET', f'files/{batch[key]}/content', lambda r: r.content.decode('utf-8'),
                              step)
            for line in content.splitlines():
                if line.strip():
                    row = json.loads(line)
                    response = row.get('response') or {}
                    i = int(row['custom_id'].rsplit('-', 1)[1])
                    results[i] = (response.get('status_code'), response.get('body') or row.get('error'))
    return results


def wait_for_batch(session, ep, args, batch_id, step):
    """Poll GET /batches/{id} until it ends; a failed or cancelled batch stops the run."""
    while True:
        batch = request(session, ep, 'GET', f'batches/{batch_id}', lambda r: dict(r.json()), step)
        status = batch.get('status')
        if status in ('completed', 'expired'):  # an expired batch returns what it finished
            return batch
        if status in ('failed', 'cancelled', 'cancelling'):
            raise Fatal(f'error: batch {batch_id} (step {step}) at {ep.base_url} is {status}: '
                        f'{json.dumps(batch.get("errors"))[:300]}')
        time.sleep(args.poll_every)


# ----------------------------------------------------------------------------
# Online mode: --concurrency entities at work, as many queued, each result journaled as it lands

def run_side(args, job, ep):
    """Every entity to do, --concurrency at work and as many queued; each result journaled as it lands."""
    stats, todo, running = new_stats(), iter(job['todo']), set()
    pool = ThreadPoolExecutor(max_workers=args.concurrency)
    try:
        with open(job['journal'], 'rb') as past, open(job['journal'], 'ab') as journal:
            while True:
                for i in todo if len(running) < 2 * args.concurrency else []:
                    running.add(pool.submit(make_profiles, ep, args, job, i, initial_state(job, past, i)))
                    if len(running) == 2 * args.concurrency:
                        break
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    record, c = future.result()  # Fatal propagates and stops the run
                    finish_entity(job, journal, record, c, stats)
                    print_progress(job, stats)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    print_summary(job, stats)


# ----------------------------------------------------------------------------
# --dry-run: the prompts of one entity, and estimates of calls, tokens, cost and time

EST_CALL_S, EST_TOKENS_PER_S = 1.0, 50  # dry-run time estimate: per-call latency, decoding speed


def dry_run(args, job):
    """Print the prompts of one entity; estimate calls, tokens (4 characters ~ 1 token; the NPs at
    F4's word cap), cost (--price-*) and time at --concurrency. No request is sent."""
    side, k, sources, has_op, todo = job['side'], args.n_profiles, job['sources'], job['has_op'], job['todo']
    i = todo[0] if todo else 0
    op = sources[i] if has_op else '<OP written by F1>'
    if not has_op:
        print_fields(side, i, sources)
    for step, (system, user) in step_messages(side, k, sources[i], op).items():
        if step == 'F1' and has_op:
            print(f'--- {side} {i}: F1 skipped, the OP is given')
            continue
        print(f'--- {side} {i}: {step} system prompt ---\n{system}\n--- {step} user message ---\n{user}\n')
    n, words = len(todo), SIDE_WORDS[side]['words']
    cap = words * 4 / 3  # tokens of a profile at its word cap
    op_tok = np.mean([len(sources[j]) for j in todo]) / 4 if has_op and n else cap
    src_tok = 0 if has_op or not n else np.mean([len(json.dumps(sources[j])) for j in todo]) / 4
    sys_tok = {step: len(system_prompt(side, step, k, sources[i])) / 4 for step in PROMPTS}
    side_tok = 100  # aspects (F2) and latent preferences (F3): about 100 tokens each
    out = {'F1': cap + 40, 'F2': side_tok, 'F3': side_tok, 'F4': (k - 1) * cap}
    inp = {'F1': sys_tok['F1'] + src_tok, 'F2': sys_tok['F2'] + op_tok, 'F3': sys_tok['F3'] + op_tok + side_tok,
           'F4': sys_tok['F4'] + op_tok + 2 * side_tok}
    steps = [step for step in PROMPTS if step != 'F1' or not has_op]  # F1 only without the OP
    prompt, completion = sum(inp[s] for s in steps) * n, sum(out[s] for s in steps) * n
    embed_tok = (op_tok + (k - 1) * cap) * n
    cost = (prompt * args.price_in + completion * args.price_out + embed_tok * args.price_embed) / 1e6
    seconds = sum(EST_CALL_S + out[s] / EST_TOKENS_PER_S for s in steps) + EST_CALL_S  # one entity, in turn
    print(f'{side}: {n} entities to do -> {len(steps) * n} chat calls, {n} embedding calls of {k} texts each, '
          f'~{prompt:,.0f} prompt + ~{completion:,.0f} completion tokens, ~{embed_tok:,.0f} embedding tokens '
          f'(estimate; first tries only, new profiles at the {words}-word cap)')
    print(f'{side}: cost ~${cost:,.2f} online, ~${cost / 2:,.2f} with --batch-api (at --price-in {args.price_in}, '
          f'--price-out {args.price_out}, --price-embed {args.price_embed} $ per million tokens); '
          f'time ~{seconds * n / args.concurrency / 60:,.1f} min at --concurrency {args.concurrency} '
          f'(assuming {EST_CALL_S:.0f} s per call + {EST_TOKENS_PER_S} tokens/s; --batch-api: up to 24 h per step)')


def print_fields(side, i, sources):
    """Which side-information fields entity i fills and which it leaves empty (or lacks) of
    those its side's records have: F1's prompt names only the filled ones."""
    present = present_fields(sources[i])
    names = dict.fromkeys(name for source in sources if isinstance(source, dict) for name in source)  # in order
    empty = [name for name in names if name not in present]
    print(f'--- {side} {i}: side information fields present: {", ".join(present) or "none"}; '
          f'empty: {", ".join(empty) or "none"}')


# ----------------------------------------------------------------------------
# Small utilities: progress lines and summary, peak memory, atomic writes

PROGRESS_EVERY = 10.0                   # seconds between progress lines


def new_stats():
    return dict(usage=new_usage(), fallbacks={}, finished=0, t0=time.time(), last_print=0.0)


def print_progress(job, stats):
    """One line every PROGRESS_EVERY seconds; rate and ETA count the entities finished in this run."""
    stats['finished'] += 1
    if time.time() - stats['last_print'] < PROGRESS_EVERY and stats['finished'] < len(job['todo']):
        return
    stats['last_print'] = time.time()
    done = sum(i in job['index'] for i in job['ids'])
    rate = stats['finished'] / max(time.time() - stats['t0'], 1e-9)
    print(f'{job["side"]}: {done}/{len(job["ids"])} finished, {len(stats["fallbacks"])} with fallback, '
          f'{rate:.2f}/s, ETA {(len(job["todo"]) - stats["finished"]) / rate / 60:.1f} min', flush=True)


def print_summary(job, stats):
    side, usage, fallbacks = job['side'], stats['usage'], stats['fallbacks']
    journal_mb = os.path.getsize(job['journal']) / 2 ** 20
    store_mb = os.path.getsize(job['store_path']) / 2 ** 20
    print(f'{side} summary: {len(job["todo"]) - len(fallbacks)} done and {len(fallbacks)} with fallback in this '
          f'run; {usage["chat_calls"]} chat + {usage["embed_calls"]} embedding calls, tokens: '
          f'{usage["prompt_tokens"]} prompt, {usage["completion_tokens"]} completion, '
          f'{usage["embed_tokens"]} embedding; {time.time() - stats["t0"]:.1f} s; journal {journal_mb:.1f} MB, '
          f'vectors {store_mb:.1f} MB, peak memory {peak_memory_mb():.0f} MB')
    for i in sorted(fallbacks)[:20]:
        print(f'  fallback {side} {i}: {fallbacks[i]}')
    if len(fallbacks) > 20:
        print(f'  ... and {len(fallbacks) - 20} more fallbacks (see {job["journal"]})')


def peak_memory_mb():
    """This process's peak resident memory. Linux: VmHWM (ru_maxrss would also count the parent's
    memory at fork time, as it survives exec)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class HashSink:
    def __init__(self):
        self.sha = hashlib.sha256()

    def write(self, data):
        self.sha.update(data)


def file_sha256(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            sha.update(chunk)
    return sha.hexdigest()


def write_if_changed(path, write):
    """write(file) into path atomically, unless the file already holds those bytes."""
    sink = HashSink()
    write(sink)
    if os.path.exists(path) and file_sha256(path) == sink.sha.hexdigest():
        return False
    write_atomic(path, write)
    return True


def write_atomic(path, write):
    """Temp file in the same folder, fsync, os.replace: readers see the old file or the new one.
    The file gets the usual permissions (0666 less the umask; mkstemp makes it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.tmp_' + os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


UMASK = current_umask()


if __name__ == '__main__':
    sys.exit(main())
