//! CLIP tokenization as diffusers' pipelines call it (`padding="max_length", truncation=True`):
//! `<bos> tokens… <eos>` truncated to `model_max_length`, padded with the config's pad token.

use super::config::{read_json, PipelineError};
use std::path::Path;

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

/// CLIP's pre-tokenization as transformers' CLIPConverter writes it into tokenizer.json: special
/// tokens, contractions, letter runs, single digits, runs of other non-space characters.
const CLIP_SPLIT: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A special token's name in tokenizer_config.json: a string, or an AddedToken object (older configs).
fn config_token<'a>(cfg: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    cfg[key].as_str().or_else(|| cfg[key]["content"].as_str())
}

/// The fast tokenizer transformers builds from a slow CLIPTokenizer's `vocab.json` +
/// `merges.txt` (real SD 1.5 and SDXL repos ship only those): NFC, whitespace runs → one space,
/// lowercase; the CLIP split, then byte-level; BPE with a `</w>` end-of-word suffix; and the
/// config's special tokens (bos/eos/pad/unk and `added_tokens_decoder`) matched before
/// normalization, as tokenizer.json's `added_tokens` are.
fn from_vocab_and_merges(dir: &Path, cfg: &serde_json::Value) -> Result<tokenizers::Tokenizer, PipelineError> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::normalizers::{Lowercase, Replace, Sequence as Normalizers, NFC};
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, sequence::Sequence as PreTokenizers, split::Split};
    use tokenizers::{AddedToken, SplitDelimiterBehavior};

    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    for f in [&vocab, &merges] {
        if !f.is_file() {
            return Err(PipelineError::Missing {
                path: f.clone(),
                detail: "a tokenizer folder needs tokenizer.json, or vocab.json + merges.txt".into(),
            });
        }
    }
    let bad = |detail: String| PipelineError::BadConfig { path: dir.to_path_buf(), detail };
    let unk = config_token(cfg, "unk_token").unwrap_or("<|endoftext|>").to_string();
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .unk_token(unk)
        .end_of_word_suffix("</w>".into())
        .build()
        .map_err(|e| bad(format!("vocab.json/merges.txt: {e}")))?;
    let whitespace = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ").map_err(|e| bad(e.to_string()))?;
    let split = Split::new(tokenizers::pre_tokenizers::split::SplitPattern::Regex(CLIP_SPLIT.into()), SplitDelimiterBehavior::Removed, true)
        .map_err(|e| bad(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_normalizer(Some(Normalizers::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
    tok.with_pre_tokenizer(Some(PreTokenizers::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
    let mut special: Vec<AddedToken> = ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|k| config_token(cfg, k))
        .map(|t| AddedToken::from(t, true).normalized(false))
        .collect();
    if let Some(decoder) = cfg["added_tokens_decoder"].as_object() {
        for t in decoder.values() {
            let Some(content) = t["content"].as_str() else { continue };
            let flag = |k: &str| t[k].as_bool().unwrap_or(false);
            special.push(
                AddedToken::from(content, t["special"].as_bool().unwrap_or(true))
                    .normalized(flag("normalized"))
                    .lstrip(flag("lstrip"))
                    .rstrip(flag("rstrip"))
                    .single_word(flag("single_word")),
            );
        }
    }
    tok.add_special_tokens(&special);
    Ok(tok)
}

impl ClipTokenizer {
    /// From a `tokenizer/` folder: `tokenizer.json`, or else `vocab.json` + `merges.txt`, with
    /// `tokenizer_config.json` for the special tokens and length.
    pub fn from_dir(dir: &Path) -> Result<Self, PipelineError> {
        let cfg: serde_json::Value = read_json(&dir.join("tokenizer_config.json")).unwrap_or_default();
        let file = dir.join("tokenizer.json");
        let inner = if file.is_file() {
            tokenizers::Tokenizer::from_file(&file).map_err(|e| PipelineError::BadConfig { path: file.clone(), detail: e.to_string() })?
        } else {
            from_vocab_and_merges(dir, &cfg)?
        };
        let token = |key: &str, default: &str| -> Result<u32, PipelineError> {
            let name = config_token(&cfg, key).unwrap_or(default);
            inner
                .token_to_id(name)
                .ok_or_else(|| PipelineError::BadConfig { path: dir.to_path_buf(), detail: format!("{key} {name:?} is not in the vocabulary") })
        };
        Ok(ClipTokenizer {
            bos: token("bos_token", "<|startoftext|>")?,
            eos: token("eos_token", "<|endoftext|>")?,
            pad: token("pad_token", "<|endoftext|>")?,
            max_len: cfg["model_max_length"].as_u64().filter(|n| *n > 2 && *n < 100_000).unwrap_or(77) as usize,
            inner,
        })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Token ids, exactly `model_max_length` long.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.inner.encode(text, false).map_err(|e| format!("cannot tokenize {text:?}: {e}"))?;
        let mut ids = vec![self.bos];
        ids.extend(enc.get_ids().iter().copied().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::testing::{pipeline_dir, reference};

    #[test]
    fn ids_match_transformers() {
        let prompt = "a photo of the SKY river";
        for (name, dir, key) in [
            ("tiny-sd15", "tokenizer", "text.input_ids"),
            ("tiny-sdxl", "tokenizer", "text.input_ids"),
            ("tiny-sdxl", "tokenizer_2", "text.input_ids_2"),
        ] {
            let tok = ClipTokenizer::from_dir(&pipeline_dir(name).join(dir)).unwrap();
            let want: Vec<u32> = reference(name)[key].flatten_all().unwrap().to_vec1::<i64>().unwrap().iter().map(|i| *i as u32).collect();
            assert_eq!(tok.encode(prompt).unwrap(), want, "{name}/{dir}");
        }
        let tok = ClipTokenizer::from_dir(&pipeline_dir("tiny-sd15").join("tokenizer")).unwrap();
        let long = tok.encode(&"sky ".repeat(200)).unwrap();
        assert_eq!(long.len(), 77);
        assert_eq!(long[76], tok.eos_id());
    }

    /// Prompts that exercise every stage: case, whitespace runs, contractions, digits,
    /// punctuation runs, accents (NFC), non-Latin scripts, emoji, and literal special tokens.
    fn prompts() -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut p: Vec<String> = [
            "a photo of the SKY river",
            "  Sunset\tover the   LAKE\n\nwith   clouds ",
            "it's a dog's life, isn't it? we'll see; they'd've",
            "sks dog in 1999, 42 photos @ 3:15pm!!! ...",
            "Caf\u{e9} cafe\u{301} na\u{ef}ve \u{c5}ngstr\u{f6}m",
            "\u{65e5}\u{672c}\u{306e}\u{7a7a} \u{1f305}\u{1f308} \u{43d}\u{435}\u{431}\u{43e}",
            "<|startoftext|>a<|endoftext|>b <|endoftext|>",
            "wow!! hello! (dark) [purple] {green} #blue $5 100% a+b=c ~_~",
            "",
            "   ",
            "DARK-STORM/forest_city night.png",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let alphabet: Vec<char> =
            "abcdefghijklmnopqrstuvwxyzSKYRIVER0123456789 \t\n'!?.,;:-_()<|>\u{e9}\u{301}\u{fc}\u{4e2d}\u{1f600}".chars().collect();
        let words = ["photo", "sky", "river", "sunset", "storm", "sks", "dog", "blurry", "low", "quality", "'s", "'re", "<|endoftext|>"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let mut s = String::new();
            for _ in 0..rng.random_range(1..40) {
                if rng.random_bool(0.3) {
                    s.push_str(words[rng.random_range(0..words.len())]);
                } else {
                    s.push(alphabet[rng.random_range(0..alphabet.len())]);
                }
            }
            p.push(s);
        }
        p
    }

    #[test]
    fn built_from_vocab_and_merges_matches_tokenizer_json() {
        for (name, dir) in [("tiny-sd15", "tokenizer"), ("tiny-sdxl", "tokenizer"), ("tiny-sdxl", "tokenizer_2")] {
            let src = pipeline_dir(name).join(dir);
            let slow = tempfile::tempdir().unwrap();
            for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
                std::fs::copy(src.join(f), slow.path().join(f)).unwrap();
            }
            let fast = ClipTokenizer::from_dir(&src).unwrap();
            let built = ClipTokenizer::from_dir(slow.path()).unwrap();
            assert_eq!((built.bos, built.eos, built.pad, built.max_len), (fast.bos, fast.eos, fast.pad, fast.max_len));
            for p in prompts() {
                let raw = |t: &ClipTokenizer| t.inner.encode(p.as_str(), false).unwrap().get_ids().to_vec();
                assert_eq!(raw(&built), raw(&fast), "{name}/{dir}: {p:?}");
                assert_eq!(built.encode(&p).unwrap(), fast.encode(&p).unwrap(), "{name}/{dir}: {p:?}");
            }
        }
    }

    #[test]
    fn a_tokenizer_folder_without_files_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vocab.json"), "{}").unwrap();
        let err = ClipTokenizer::from_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("merges.txt") && err.contains("tokenizer.json"), "{err}");
    }
}
