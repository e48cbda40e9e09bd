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

impl ClipTokenizer {
    /// From a `tokenizer/` folder with `tokenizer.json` and `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, PipelineError> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(PipelineError::Missing {
                path: file,
                detail: "tokenizer.json is needed (building from vocab.json + merges.txt alone is not supported yet)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| PipelineError::BadConfig { path: file.clone(), detail: e.to_string() })?;
        let cfg: serde_json::Value = read_json(&dir.join("tokenizer_config.json")).unwrap_or_default();
        let token = |key: &str, default: &str| -> Result<u32, PipelineError> {
            let name = cfg[key].as_str().or_else(|| cfg[key]["content"].as_str()).unwrap_or(default);
            inner.token_to_id(name).ok_or_else(|| PipelineError::BadConfig {
                path: file.clone(),
                detail: format!("{key} {name:?} is not in the vocabulary"),
            })
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
}
