//! BERT tokenization on top of the `tokenizers` crate (no network).
//!
//! A model directory provides either `tokenizer.json` (loaded as is) or
//! `vocab.txt`, from which the standard BERT WordPiece pipeline is built:
//! `BertNormalizer` (clean text, CJK spacing, lower-casing from
//! `tokenizer_config.json` / `config.json` `do_lower_case`, default true;
//! accents are stripped exactly when lower-casing, as in Hugging Face),
//! `BertPreTokenizer`, WordPiece (`##` continuation prefix, `[UNK]`,
//! 100 chars per word) and the template `[CLS] A [SEP] (B [SEP])` with
//! token types 0 / 1. The special tokens are registered as added tokens, as
//! the Hugging Face converter does.
//!
//! Truncation and padding stored in a `tokenizer.json` are switched off:
//! [`Tokenizer::encode`] truncates to the `max_len` it is given (longest-first
//! for pairs, the rule of the Hugging Face fast tokenizers) and batching pads.
//! Offsets are *character* offsets (Unicode scalar values) into the original
//! text, the unit of SQuAD's `answer_start`.

use std::path::{Path, PathBuf};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::utils::truncation::{
    truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy,
};
use tokenizers::{AddedToken, Encoding, PostProcessor};

use crate::error::{Error, Result};

/// The result of encoding one sentence or a pair, special tokens included.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
    pub type_ids: Vec<u32>,
    /// The token strings (`##` marks a continuation piece).
    pub tokens: Vec<String>,
    /// Character offsets `[start, end)` into the text the token came from
    /// (`(0, 0)` for special tokens).
    pub offsets: Vec<(usize, usize)>,
    /// `Some(0)` for tokens of A, `Some(1)` for B, `None` for special tokens.
    pub sequence_ids: Vec<Option<usize>>,
    /// Whether tokens were cut to fit `max_len`.
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Pieces of one text without special tokens (what SQuAD windows are cut from).
#[derive(Clone, Debug, PartialEq)]
pub struct Pieces {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Character offsets into the text.
    pub offsets: Vec<(usize, usize)>,
}

/// A BERT tokenizer: the `tokenizers` pipeline plus the ids of its special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    pad_id: u32,
    cls_id: u32,
    sep_id: u32,
    unk_id: u32,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .field("pad_id", &self.pad_id)
            .field("cls_id", &self.cls_id)
            .field("sep_id", &self.sep_id)
            .finish()
    }
}

/// Special-token strings, from `tokenizer_config.json` when it names them.
struct SpecialNames {
    pad: String,
    cls: String,
    sep: String,
    unk: String,
    mask: String,
}

impl Default for SpecialNames {
    fn default() -> Self {
        SpecialNames {
            pad: "[PAD]".into(),
            cls: "[CLS]".into(),
            sep: "[SEP]".into(),
            unk: "[UNK]".into(),
            mask: "[MASK]".into(),
        }
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value = serde_json::from_str(&text)
        .map_err(|e| Error::data(path, e.line(), format!("malformed JSON: {e}")))?;
    Ok(Some(value))
}

/// A special token name in `tokenizer_config.json`: a string or `{"content": ..}`.
fn token_name(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v.get("content")?.as_str().map(str::to_string),
    }
}

/// A `TemplateProcessing` post-processor (alone or inside a `Sequence`)
/// must define every special token its templates use, and the single
/// template may only use sequence A: the tokenizers crate indexes both
/// without checking when the file is read (found by scripts/fuzz.sh).
fn check_template(pp: &serde_json::Value) -> std::result::Result<(), String> {
    // Judged by shape, not by "type": the crate's loader accepts a processor
    // whose "type" is not a string (found by scripts/fuzz.sh) and then
    // panics on the template's undefined special token at encode time.
    if let Some(procs) = pp.get("processors").and_then(|p| p.as_array()) {
        for p in procs {
            check_template(p)?;
        }
    }
    if pp.get("single").is_none() && pp.get("pair").is_none() {
        return Ok(());
    }
    let specials = pp.get("special_tokens").and_then(|s| s.as_object());
    for (which, allow_b) in [("single", false), ("pair", true)] {
        for piece in pp
            .get(which)
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(id) = piece.pointer("/SpecialToken/id").and_then(|i| i.as_str()) {
                if !specials.is_some_and(|s| s.contains_key(id)) {
                    return Err(format!(
                        "the {which} template uses special token `{id}`, which special_tokens does not define"
                    ));
                }
            }
            if !allow_b && piece.pointer("/Sequence/id").and_then(|i| i.as_str()) == Some("B") {
                return Err("the single template uses sequence B".into());
            }
        }
    }
    Ok(())
}

impl Tokenizer {
    /// Load the tokenizer of a model directory: `tokenizer.json` when present,
    /// else `vocab.txt` (lower-casing from `tokenizer_config.json`, then
    /// `config.json` `do_lower_case`, default true).
    /// A sentence-transformers directory whose files sit in `0_Transformer/`
    /// is followed there.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let has = |d: &Path| d.join("tokenizer.json").is_file() || d.join("vocab.txt").is_file();
        let sub = dir.join("0_Transformer");
        let dir = if !has(dir) && has(&sub) {
            sub.as_path()
        } else {
            dir
        };
        let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let mut names = SpecialNames::default();
        if let Some(cfg) = &tok_cfg {
            for (key, slot) in [
                ("pad_token", &mut names.pad),
                ("cls_token", &mut names.cls),
                ("sep_token", &mut names.sep),
                ("unk_token", &mut names.unk),
                ("mask_token", &mut names.mask),
            ] {
                if let Some(n) = token_name(cfg, key) {
                    *slot = n;
                }
            }
        }
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_json_file(&json, &names);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            let lower = match tok_cfg.as_ref().and_then(|c| c.get("do_lower_case")) {
                Some(v) => v.as_bool(),
                None => read_json(&dir.join("config.json"))?
                    .and_then(|c| c.get("do_lower_case").and_then(|v| v.as_bool())),
            }
            .unwrap_or(true);
            return Self::build_wordpiece(&vocab, lower, &names);
        }
        Err(Error::msg(format!(
            "{}: no tokenizer found (expected tokenizer.json or vocab.txt)",
            dir.display()
        )))
    }

    /// Load a `tokenizer.json` file.
    pub fn from_json(path: impl AsRef<Path>) -> Result<Tokenizer> {
        Self::from_json_file(path.as_ref(), &SpecialNames::default())
    }

    /// Build the BERT WordPiece tokenizer from a `vocab.txt`.
    pub fn from_vocab(path: impl AsRef<Path>, lowercase: bool) -> Result<Tokenizer> {
        Self::build_wordpiece(path.as_ref(), lowercase, &SpecialNames::default())
    }

    fn from_json_file(path: &Path, names: &SpecialNames) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // The tokenizers crate panics on a syntax error inside its "decoder"
        // section (found by scripts/fuzz.sh): check the JSON syntax first.
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::data(path, e.line(), format!("malformed tokenizer.json: {e}")))?;
        if let Some(pp) = doc.get("post_processor") {
            check_template(pp)
                .map_err(|m| Error::msg(format!("{}: post_processor: {m}", path.display())))?;
        }
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            Error::msg(format!("{}: malformed tokenizer.json: {e}", path.display()))
        })?;
        inner
            .with_truncation(None)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        Self::finish(inner, path, names)
    }

    fn build_wordpiece(path: &Path, lowercase: bool, names: &SpecialNames) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            Error::data(path, line, "vocab.txt is not valid UTF-8")
        })?;
        if text.lines().all(|l| l.trim().is_empty()) {
            return Err(Error::data(path, 1, "vocab.txt is empty"));
        }
        let vocab = WordPiece::read_bytes(text.as_bytes())
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        for (what, name) in [
            ("unknown", &names.unk),
            ("[CLS]", &names.cls),
            ("[SEP]", &names.sep),
        ] {
            if !vocab.contains_key(name.as_str()) {
                return Err(Error::msg(format!(
                    "{}: vocab.txt lacks the {what} token {name}",
                    path.display()
                )));
            }
        }
        let cls_id = vocab[names.cls.as_str()];
        let sep_id = vocab[names.sep.as_str()];
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token(names.unk.clone())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let template = TemplateProcessing::builder()
            .try_single(format!("{}:0 $A:0 {}:0", names.cls, names.sep))
            .and_then(|b| b.try_pair(format!("{0}:0 $A:0 {1}:0 $B:1 {1}:1", names.cls, names.sep)))
            .map_err(|e| Error::msg(format!("{}: post-processor: {e}", path.display())))?
            .special_tokens(vec![
                (names.cls.as_str(), cls_id),
                (names.sep.as_str(), sep_id),
            ])
            .build()
            .map_err(|e| Error::msg(format!("{}: post-processor: {e}", path.display())))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(template))
            .with_decoder(Some(WordPieceDecoder::default()));
        let specials: Vec<AddedToken> =
            [&names.pad, &names.unk, &names.cls, &names.sep, &names.mask]
                .into_iter()
                .filter(|t| inner.token_to_id(t).is_some())
                .map(|t| AddedToken::from(t.clone(), true))
                .collect();
        inner.add_special_tokens(&specials);
        Self::finish(inner, path, names)
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        path: &Path,
        names: &SpecialNames,
    ) -> Result<Tokenizer> {
        let id = |name: &str| {
            inner.token_to_id(name).ok_or_else(|| {
                Error::msg(format!(
                    "{}: the tokenizer has no token {name}",
                    path.display()
                ))
            })
        };
        let cls_id = id(&names.cls)?;
        let sep_id = id(&names.sep)?;
        let unk_id = id(&names.unk)?;
        let pad_id = inner.token_to_id(&names.pad).unwrap_or(0);
        // Embedding rows: one past the largest id (duplicate lines in a
        // vocab.txt leave gaps, so the count of distinct tokens can be smaller).
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Ok(Tokenizer {
            inner,
            source: path.to_path_buf(),
            pad_id,
            cls_id,
            sep_id,
            unk_id,
            vocab_size,
        })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
    /// Vocabulary size (largest id + 1, added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    /// The file the tokenizer was built from.
    pub fn source(&self) -> &Path {
        &self.source
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// The underlying `tokenizers` tokenizer (truncation and padding off).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Special tokens the template adds (2 for one sentence, 3 for a pair in BERT).
    pub fn num_special_tokens(&self, pair: bool) -> usize {
        self.inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    fn raw(&self, text: &str, offsets: bool) -> Result<Encoding> {
        let r = if offsets {
            self.inner.encode_char_offsets(text, false)
        } else {
            self.inner.encode_fast(text, false)
        };
        r.map_err(|e| Error::msg(format!("tokenizing with {}: {e}", self.source.display())))
    }

    /// Tokenize one text without special tokens and without truncation.
    pub fn pieces(&self, text: &str) -> Result<Pieces> {
        let enc = self.raw(text, true)?;
        Ok(Pieces {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Tokenize, truncate (longest first) and add the special tokens; also
    /// says whether tokens were cut.
    fn encode_raw(
        &self,
        a: &str,
        b: Option<&str>,
        max_len: usize,
        offsets: bool,
    ) -> Result<(Encoding, bool)> {
        let special = self.num_special_tokens(b.is_some());
        if max_len < special + 1 {
            return Err(Error::msg(format!(
                "max sequence length {max_len} leaves no room besides {special} special tokens"
            )));
        }
        let ea = self.raw(a, offsets)?;
        let eb = b.map(|b| self.raw(b, offsets)).transpose()?;
        let before = ea.len() + eb.as_ref().map_or(0, |e| e.len());
        let params = TruncationParams {
            max_length: max_len - special,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        let (mut ea, mut eb) = truncate_encodings(ea, eb, &params)
            .map_err(|e| Error::msg(format!("truncating: {e}")))?;
        ea.take_overflowing();
        if let Some(eb) = eb.as_mut() {
            eb.take_overflowing();
        }
        let truncated = ea.len() + eb.as_ref().map_or(0, |e| e.len()) < before;
        let enc = self
            .inner
            .post_process(ea, eb, true)
            .map_err(|e| Error::msg(format!("tokenizing with {}: {e}", self.source.display())))?;
        Ok((enc, truncated))
    }

    /// Encode a sentence (`b = None`) or a pair with special tokens, truncated
    /// to `max_len` tokens in all (longest-first for pairs).
    pub fn encode(&self, a: &str, b: Option<&str>, max_len: usize) -> Result<Encoded> {
        let (enc, truncated) = self.encode_raw(a, b, max_len, true)?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
            sequence_ids: enc.get_sequence_ids(),
            truncated,
        })
    }

    /// Like [`encode`](Self::encode) but only ids, type ids and whether
    /// tokens were cut (no offsets: faster, for classification data).
    pub fn encode_ids(
        &self,
        a: &str,
        b: Option<&str>,
        max_len: usize,
    ) -> Result<(Vec<u32>, Vec<u32>, bool)> {
        let (enc, truncated) = self.encode_raw(a, b, max_len, false)?;
        Ok((
            enc.get_ids().to_vec(),
            enc.get_type_ids().to_vec(),
            truncated,
        ))
    }

    /// Turn ids back into text (special tokens skipped, `##` joined).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::msg(format!("decoding: {e}")))
    }
}
