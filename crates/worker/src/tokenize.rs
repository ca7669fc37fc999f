//! Tokenization with the `tokenizers` crate, from the job's `tokenizer.json`.
//!
//! Each item is encoded on its own (special tokens added, the file's truncation applied, no
//! padding); the model thread pads each batch to its longest row with the file's pad id.

use tokenizers::Tokenizer;

/// Why the tokenizer could not be loaded or an item not encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The tokenizer file is invalid.
    #[error("failed to load tokenizer {source_name}: {message}")]
    Load {
        /// Where it came from.
        source_name: String,
        /// The library's message.
        message: String,
    },
}

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: i64,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` from its bytes (`source_name` names it in errors).
    ///
    /// # Errors
    /// [`TokenizeError::Load`] when the bytes are not a tokenizer.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self, TokenizeError> {
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| TokenizeError::Load {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        let pad_id = inner.get_padding().map_or(0, |p| i64::from(p.pad_id));
        inner.with_padding(None);
        Ok(Self { inner, pad_id })
    }

    /// The id used to pad batches (the file's padding `pad_id`, else 0).
    #[must_use]
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Token ids of `text` with special tokens, truncated as the file says.
    ///
    /// # Errors
    /// A message when the tokenizer fails on this text.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, String> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| format!("failed to tokenize: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A word-level tokenizer with a 4-word vocabulary, [CLS]/[SEP] template, truncation 4.
    pub(crate) const TINY: &str = r#"{
      "version": "1.0",
      "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
      "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [],
      "normalizer": {"type": "Lowercase"},
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}}},
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "hello": 4, "world": 5, "big": 6}, "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn encodes_with_specials_truncation_and_no_padding() {
        let t = TextTokenizer::from_bytes(TINY.as_bytes(), "tiny").unwrap();
        assert_eq!(t.pad_id(), 0);
        assert_eq!(t.encode("Hello world").unwrap(), vec![1, 4, 5, 2]);
        assert_eq!(t.encode("hello").unwrap(), vec![1, 4, 2]);
        // truncated to 4 including the specials; unknown word -> [UNK]
        assert_eq!(t.encode("big big zzz world").unwrap(), vec![1, 6, 6, 2]);
        assert_eq!(t.encode("zzz").unwrap(), vec![1, 3, 2]);
    }

    #[test]
    fn garbage_is_a_load_error_naming_the_file() {
        let err = TextTokenizer::from_bytes(b"{}", "tok.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to load tokenizer tok.json"),
            "{err}"
        );
    }
}
