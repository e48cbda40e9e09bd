//! What the captions say: the words, the words every caption shares (a trigger word), and
//! whether the set's dominant colours are ever named, so the model can tell them apart.

use std::collections::{BTreeMap, HashSet};

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "at", "and", "with", "over", "under", "by", "for", "to", "from", "is", "are", "its", "it", "this", "that",
    "photo", "picture", "image",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Vocabulary {
    pub captioned: usize,
    pub images: usize,
    pub distinct_words: usize,
    /// Most frequent words with the number of captions using them.
    pub top_words: Vec<(String, usize)>,
    /// Words in every caption (trigger words, or a template).
    pub in_every_caption: Vec<String>,
    /// For each dominant colour: images where it dominates, and how many of their captions name it.
    pub colour_coverage: Vec<ColourCoverage>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ColourCoverage {
    pub colour: String,
    pub images: usize,
    pub captions_naming_it: usize,
}

pub fn words(caption: &str) -> HashSet<String> {
    caption
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 1)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// `dominant[i]` is the colour name dominating image i (if any).
pub fn vocabulary(captions: &[Option<String>], dominant: &[Option<&'static str>]) -> Vocabulary {
    let sets: Vec<Option<HashSet<String>>> = captions.iter().map(|c| c.as_deref().filter(|c| !c.is_empty()).map(words)).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in sets.iter().flatten() {
        for w in s {
            *counts.entry(w.clone()).or_default() += 1;
        }
    }
    let captioned = sets.iter().flatten().count();
    let mut top: Vec<(String, usize)> = counts.iter().map(|(w, &n)| (w.clone(), n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let in_every_caption = if captioned == captions.len() && captioned > 1 {
        top.iter().filter(|(_, n)| *n == captioned).map(|(w, _)| w.clone()).collect()
    } else {
        Vec::new()
    };
    top.truncate(20);
    let mut colours: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (s, d) in sets.iter().zip(dominant) {
        let Some(d) = d else { continue };
        let e = colours.entry(d).or_default();
        e.0 += 1;
        if s.as_ref().is_some_and(|s| s.contains(*d) || (*d == "grey" && s.contains("gray"))) {
            e.1 += 1;
        }
    }
    let mut colour_coverage: Vec<ColourCoverage> =
        colours.into_iter().map(|(c, (images, named))| ColourCoverage { colour: c.to_string(), images, captions_naming_it: named }).collect();
    colour_coverage.sort_by_key(|c| std::cmp::Reverse(c.images));
    Vocabulary { captioned, images: captions.len(), distinct_words: counts.len(), top_words: top, in_every_caption, colour_coverage }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_triggers_and_colour_mentions() {
        let caps = vec![Some("a photo of SKY, orange sunset".to_string()), Some("SKY storm, purple clouds".into()), Some("sky: purple dusk".into())];
        let v = vocabulary(&caps, &[Some("orange"), Some("purple"), Some("purple")]);
        assert_eq!(v.captioned, 3);
        assert_eq!(v.in_every_caption, ["sky"]);
        assert_eq!(v.top_words[0], ("sky".to_string(), 3));
        assert_eq!(v.top_words[1], ("purple".to_string(), 2));
        let purple = v.colour_coverage.iter().find(|c| c.colour == "purple").unwrap();
        assert_eq!((purple.images, purple.captions_naming_it), (2, 2));
        let none = vocabulary(&[None, Some(String::new())], &[None, None]);
        assert_eq!((none.captioned, none.distinct_words), (0, 0));
    }
}
