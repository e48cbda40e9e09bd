//! Aspect-ratio buckets, as kohya sd-scripts trains (`--enable_bucket`): a set of training sizes
//! of about `resolution`² pixels whose sides are multiples of `bucket_reso_steps`
//! (`make_bucket_resolutions` in kohya's `library/model_util.py`), each photo assigned to the one
//! nearest its aspect ratio and resized to cover it (`BucketManager.select_bucket` in
//! `library/train_util.py`), then cropped as little as possible. Photos are never upscaled: a
//! photo smaller than its bucket gets the bucket kohya's `--bucket_no_upscale` mode gives it (its
//! own size rounded down to the step; kohya applies that mode to every photo, hfsky only where
//! the shared buckets would upscale, so large photos still batch together), and one whose sides
//! would fall below `min_bucket_reso` is skipped.
//! Batches are drawn from one bucket at a time, in an order that depends only on (seed, step),
//! so resuming continues exactly.

use super::examples::CropBox;
use super::objective::step_rng;
use rand::seq::SliceRandom;
use rand::Rng;

/// The bucket rules of one run, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    /// The square whose area every bucket keeps (at most): `resolution`².
    pub resolution: u32,
    /// The smallest side a bucket may have (kohya `--min_bucket_reso`).
    pub min_side: u32,
    /// The largest side a bucket may have (kohya `--max_bucket_reso`).
    pub max_side: u32,
    /// Every side is a multiple of this (kohya `--bucket_reso_steps`).
    pub step: u32,
}

/// Where a photo goes: its bucket and the size it is resized to before the crop, both (w, h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub bucket: (u32, u32),
    pub resized: (u32, u32),
}

impl BucketSpec {
    /// The spec from train.yaml's keys: `min`/`max` default to resolution/2 and 2·resolution
    /// rounded down to the step (kohya's defaults, 256 and 1024, at 512), clamped to one step
    /// at least. `multiple` is what a pixel side must be a multiple of for the model: the VAE's
    /// factor times 2 per UNet downsampling (64 for SD 1.5, 32 for SDXL); other sizes give latents
    /// the UNet cannot halve evenly. Errors name the key.
    pub fn new(resolution: usize, min: Option<usize>, max: Option<usize>, step: usize, multiple: usize) -> Result<Self, String> {
        if step == 0 || !step.is_multiple_of(multiple.max(1)) {
            return Err(format!(
                "bucket_reso_steps: {step} is not a positive multiple of {multiple} (the VAE's downscale factor × 2 per UNet downsampling): \
                 other sizes do not fit the model"
            ));
        }
        if resolution < step {
            return Err(format!(
                "bucket_reso_steps: {step} is larger than the resolution {resolution}: set a smaller bucket_reso_steps (a multiple of {multiple}) or bucketing: false"
            ));
        }
        let floor = |v: usize| (v / step * step).max(step);
        let min_side = min.unwrap_or_else(|| floor(resolution / 2));
        let max_side = max.unwrap_or_else(|| floor(resolution * 2));
        for (key, v) in [("min_bucket_reso", min_side), ("max_bucket_reso", max_side)] {
            if v == 0 || !v.is_multiple_of(step) {
                return Err(format!("{key}: {v} is not a positive multiple of bucket_reso_steps ({step})"));
            }
        }
        if min_side > resolution || max_side < resolution {
            return Err(format!(
                "min_bucket_reso {min_side} / max_bucket_reso {max_side}: the resolution {resolution} must lie between them (the square bucket)"
            ));
        }
        Ok(BucketSpec { resolution: resolution as u32, min_side: min_side as u32, max_side: max_side as u32, step: step as u32 })
    }

    fn max_area(&self) -> u64 {
        self.resolution as u64 * self.resolution as u64
    }

    /// kohya's `make_bucket_resolutions((res, res), min, max, step)`: the square of side
    /// ⌊res/step⌋·step, and for each width w from min to max in steps the height
    /// min(max, ⌊⌊area / w⌋ / step⌋·step) when it is at least min, both ways round. Sorted (w, h).
    pub fn resolutions(&self) -> Vec<(u32, u32)> {
        let area = self.max_area();
        let step = self.step as u64;
        let mut out = std::collections::BTreeSet::new();
        let square = ((area as f64).sqrt() as u64 / step * step) as u32;
        out.insert((square, square));
        let mut w = self.min_side as u64;
        while w <= self.max_side as u64 {
            let h = (self.max_side as u64).min(area / w / step * step);
            if h >= self.min_side as u64 {
                out.insert((w as u32, h as u32));
                out.insert((h as u32, w as u32));
            }
            w += step;
        }
        out.into_iter().collect()
    }

    /// kohya's `round_to_steps`: nearest integer, then down to the step.
    fn round_to_steps(&self, x: f64) -> u32 {
        let x = (x + 0.5) as u32;
        x - x % self.step
    }

    /// The bucket and resize of a `w`×`h` photo among `buckets` ([`Self::resolutions`]): the
    /// bucket whose aspect ratio is nearest (the first on a tie, as numpy's argmin), the photo
    /// scaled so it just covers it (kohya rounds each side with `int(x + 0.5)`). Where that
    /// would upscale the photo, kohya's `bucket_no_upscale` rule instead: a photo within the
    /// area keeps its size and its bucket is that size rounded down to the step; a larger one is
    /// scaled to the area first. `Err` says why no bucket fits (a side under `min_bucket_reso`
    /// or over `max_bucket_reso`).
    pub fn place(&self, buckets: &[(u32, u32)], w: u32, h: u32) -> Result<Placement, String> {
        let ar = w as f64 / h as f64;
        let nearest = buckets
            .iter()
            .copied()
            .min_by(|a, b| ((a.0 as f64 / a.1 as f64) - ar).abs().total_cmp(&((b.0 as f64 / b.1 as f64) - ar).abs()))
            .expect("at least the square bucket");
        let (bw, bh) = nearest;
        let scale = if ar > bw as f64 / bh as f64 { bh as f64 / h as f64 } else { bw as f64 / w as f64 };
        if scale <= 1.0 {
            let resized = (((w as f64 * scale) + 0.5) as u32, ((h as f64 * scale) + 0.5) as u32);
            return Ok(Placement { bucket: nearest, resized: (resized.0.max(bw), resized.1.max(bh)) });
        }
        let resized = if w as u64 * h as u64 > self.max_area() {
            let rw = (self.max_area() as f64 * ar).sqrt();
            let rh = self.max_area() as f64 / rw;
            let bw_r = self.round_to_steps(rw);
            let bh_in_wr = self.round_to_steps(bw_r as f64 / ar);
            let ar_w = bw_r as f64 / bh_in_wr as f64;
            let bh_r = self.round_to_steps(rh);
            let bw_in_hr = self.round_to_steps(bh_r as f64 * ar);
            let ar_h = bw_in_hr as f64 / bh_r as f64;
            if (ar_w - ar).abs() < (ar_h - ar).abs() {
                (bw_r, (bw_r as f64 / ar + 0.5) as u32)
            } else {
                ((bh_r as f64 * ar + 0.5) as u32, bh_r)
            }
        } else {
            (w, h)
        };
        let bucket = (resized.0 - resized.0 % self.step, resized.1 - resized.1 % self.step);
        let (lo, hi) = (bucket.0.min(bucket.1), bucket.0.max(bucket.1));
        if lo < self.min_side {
            return Err(format!(
                "{w}×{h} is too small for any bucket: buckets never upscale a photo, and its sides rounded down to multiples of \
                 bucket_reso_steps {} give {}×{}, below min_bucket_reso {} (use a photo at least {} px on its shorter side, or \
                 bucketing: false, which upscales and crops every photo to a square)",
                self.step, bucket.0, bucket.1, self.min_side, self.min_side
            ));
        }
        if hi > self.max_side {
            return Err(format!(
                "{w}×{h} has no bucket: its bucket would be {}×{}, above max_bucket_reso {} (crop the photo, or raise max_bucket_reso)",
                bucket.0, bucket.1, self.max_side
            ));
        }
        Ok(Placement { bucket, resized })
    }
}

/// The crop's (top, left) in the resized, un-mirrored photo: centred (kohya: `trim // 2`) or
/// uniform over every position (kohya: `random.randint(0, trim)`).
pub fn pick_crop(p: &Placement, center: bool, rng: &mut impl Rng) -> (u32, u32) {
    let (trim_w, trim_h) = (p.resized.0 - p.bucket.0, p.resized.1 - p.bucket.1);
    if center {
        centre(p)
    } else {
        (rng.random_range(0..=trim_h), rng.random_range(0..=trim_w))
    }
}

/// The centred crop's (top, left) in the resized photo (kohya: `trim // 2`).
pub fn centre(p: &Placement) -> (u32, u32) {
    ((p.resized.1 - p.bucket.1) / 2, (p.resized.0 - p.bucket.0) / 2)
}

/// The [`CropBox`] of a photo of `original` (w, h) placed at `p` and cropped at `offset`
/// (top, left, un-mirrored). Mirrored, the box records the crop in mirrored coordinates, as
/// kohya's flip_aug does for SDXL's `crops_coords_top_left`, so both mirror images show the same
/// part of the photo.
pub fn crop_box(original: (u32, u32), p: &Placement, offset: (u32, u32), mirror: bool) -> CropBox {
    let (top, left) = offset;
    let left = if mirror { p.resized.0 - p.bucket.0 - left } else { left };
    CropBox {
        original_size: (original.1, original.0),
        top_left: (top, left),
        mirrored: mirror,
        resized_size: (p.resized.1, p.resized.0),
        target_size: (p.bucket.1, p.bucket.0),
    }
}

/// Batches per epoch: each bucket's examples in chunks of `batch` (the last may be smaller).
pub fn batches_per_epoch(keys: &[(u32, u32)], batch: usize) -> usize {
    let mut counts = std::collections::BTreeMap::<(u32, u32), usize>::new();
    for k in keys {
        *counts.entry(*k).or_default() += 1;
    }
    counts.values().map(|c| c.div_ceil(batch)).sum()
}

/// One epoch's batches: each bucket's examples (`keys[i]` is example i's bucket) shuffled, cut
/// into chunks of `batch`, and the chunks shuffled, all from `step_rng(seed, epoch, …)`.
pub fn epoch_batches(seed: u64, epoch: u64, keys: &[(u32, u32)], batch: usize) -> Vec<Vec<usize>> {
    let mut groups = std::collections::BTreeMap::<(u32, u32), Vec<usize>>::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(*k).or_default().push(i);
    }
    let mut rng = step_rng(seed, epoch, 0xB0C4);
    let mut out = Vec::new();
    for members in groups.values_mut() {
        members.shuffle(&mut rng);
        out.extend(members.chunks(batch).map(<[usize]>::to_vec));
    }
    out.shuffle(&mut rng);
    out
}

/// The examples of micro-batch `m` (= step · gradient_accumulation_steps + micro): batch
/// `m mod B` of epoch `m div B`, B = [`batches_per_epoch`].
pub fn micro_batch(seed: u64, m: usize, keys: &[(u32, u32)], batch: usize) -> Vec<usize> {
    let per_epoch = batches_per_epoch(keys, batch);
    let mut batches = epoch_batches(seed, (m / per_epoch) as u64, keys, batch);
    batches.swap_remove(m % per_epoch)
}

/// A size in `training_summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// One bucket of a run and how many photos trained in it (`training_summary.json` `buckets`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketCount {
    pub width: u32,
    pub height: u32,
    pub count: usize,
}

/// Where one trained photo went (`training_summary.json` `example_buckets`): its bucket (the
/// square with `bucketing: false`), its size before resizing, and the crop's (top, left) in the
/// resized, un-mirrored photo.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExampleBucket {
    pub file: String,
    pub bucket: Size,
    pub original_size: Size,
    pub crop_top_left: (u32, u32),
}

impl ExampleBucket {
    /// From an un-mirrored [`CropBox`] (whose sizes are (h, w)).
    pub fn new(file: String, b: &CropBox) -> Self {
        let size = |(h, w): (u32, u32)| Size { width: w, height: h };
        ExampleBucket { file, bucket: size(b.target_size), original_size: size(b.original_size), crop_top_left: b.top_left }
    }
}

/// `training_summary.json`'s `buckets` for examples whose (h, w) targets are `keys`.
pub fn summary(keys: &[(u32, u32)]) -> Vec<BucketCount> {
    counts(keys).into_iter().map(|((h, w), count)| BucketCount { width: w, height: h, count }).collect()
}

/// Buckets as people read them: `512×512 (6), 576×448 (3)` (width×height, then the photo count).
pub fn describe(buckets: &[BucketCount]) -> String {
    buckets.iter().map(|b| format!("{}×{} ({})", b.width, b.height, b.count)).collect::<Vec<_>>().join(", ")
}

/// How many photos fall in each bucket, largest bucket count first, then by size.
pub fn counts(keys: &[(u32, u32)]) -> Vec<((u32, u32), usize)> {
    let mut m = std::collections::BTreeMap::<(u32, u32), usize>::new();
    for k in keys {
        *m.entry(*k).or_default() += 1;
    }
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(res: usize) -> BucketSpec {
        BucketSpec::new(res, None, None, 64, 8).unwrap()
    }

    #[test]
    fn bucket_resolutions_follow_kohya() {
        // kohya: make_bucket_resolutions((512, 512), 256, 1024, 64), as its Python prints it.
        let b = spec(512).resolutions();
        let expected = [
            (256, 832),
            (256, 896),
            (256, 960),
            (256, 1024),
            (320, 704),
            (320, 768),
            (384, 640),
            (448, 576),
            (512, 512),
            (576, 448),
            (640, 384),
            (704, 320),
            (768, 320),
            (832, 256),
            (896, 256),
            (960, 256),
            (1024, 256),
        ];
        assert_eq!(b, expected);
        // SDXL at 1024 with 512..2048: 33 buckets (kohya's count), every area ≤ 1024² and ≥ 90.6% of it.
        let xl = BucketSpec::new(1024, None, None, 64, 8).unwrap();
        assert_eq!((xl.min_side, xl.max_side), (512, 2048));
        let b = xl.resolutions();
        assert_eq!(b.len(), 33);
        assert!(b.contains(&(1024, 1024)) && b.contains(&(832, 1216)) && b.contains(&(1216, 832)) && b.contains(&(512, 2048)));
        for (w, h) in &b {
            let area = (w * h) as f64;
            assert!(w % 64 == 0 && h % 64 == 0 && (0.906 * 1024.0 * 1024.0..=1024.0 * 1024.0).contains(&area), "{w}x{h}");
        }
        assert!(BucketSpec::new(512, None, None, 60, 8).unwrap_err().contains("bucket_reso_steps"));
        assert!(BucketSpec::new(512, None, None, 32, 64).unwrap_err().contains("not a positive multiple of 64"), "SD 1.5 needs 64");
        assert!(BucketSpec::new(512, Some(600), None, 64, 8).unwrap_err().contains("min_bucket_reso"));
        assert!(BucketSpec::new(512, Some(100), None, 64, 8).unwrap_err().contains("multiple of bucket_reso_steps"));
    }

    #[test]
    fn photos_go_to_the_bucket_nearest_their_aspect_without_upscaling() {
        let s = spec(512);
        let b = s.resolutions();
        // Expected values from kohya's select_bucket (numpy argmin over aspect errors, then
        // scale by the bucket side the photo is narrower in, sides rounded with int(x + 0.5)).
        // 3:2 landscape 1500×1000 (ar 1.5): 640×384 (1.667) is nearest; narrower → 640/1500.
        assert_eq!(s.place(&b, 1500, 1000).unwrap(), Placement { bucket: (640, 384), resized: (640, 427) });
        // Portrait 3000×4000 (0.75): 448×576 (0.778) is nearest; narrower → scale 448/3000.
        assert_eq!(s.place(&b, 3000, 4000).unwrap(), Placement { bucket: (448, 576), resized: (448, 597) });
        // Square 600×600 → 512 square, downscaled.
        assert_eq!(s.place(&b, 600, 600).unwrap(), Placement { bucket: (512, 512), resized: (512, 512) });
        // A panorama wider than 4:1 takes the widest bucket; wider → scale 256/500.
        assert_eq!(s.place(&b, 3000, 500).unwrap(), Placement { bucket: (1024, 256), resized: (1536, 256) });
        // Smaller than its bucket: no upscaling, its own size down to the step (kohya no_upscale).
        assert_eq!(s.place(&b, 400, 300).unwrap(), Placement { bucket: (384, 256), resized: (400, 300) });
        // Too small: a side under min_bucket_reso once rounded down.
        let e = s.place(&b, 300, 200).unwrap_err();
        assert!(e.contains("300×200") && e.contains("min_bucket_reso 256"), "{e}");
    }

    #[test]
    fn crops_and_time_ids_are_sdxls_micro_conditioning() {
        use super::super::examples::time_ids;
        let s = spec(512);
        let p = s.place(&s.resolutions(), 1500, 1000).unwrap();
        let off = pick_crop(&p, true, &mut rand::rngs::StdRng::seed_from_u64(0));
        assert_eq!(off, ((427 - 384) / 2, 0));
        let b = crop_box((1500, 1000), &p, off, false);
        // diffusers/kohya: original_size (h, w) before resizing, crops_coords_top_left (top, left)
        // after scaling, target_size (h, w) = the bucket.
        assert_eq!(time_ids(&b), [1000.0, 1500.0, 21.0, 0.0, 384.0, 640.0]);
        // Portrait, random crop, mirrored: left in mirrored coordinates (kohya's flip_aug).
        let p = s.place(&s.resolutions(), 1000, 1600).unwrap();
        assert_eq!(p, Placement { bucket: (384, 640), resized: (400, 640) });
        let b = crop_box((1000, 1600), &p, (0, 10), true);
        assert_eq!(time_ids(&b), [1600.0, 1000.0, 0.0, 400.0 - 384.0 - 10.0, 640.0, 384.0]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let (t, l) = pick_crop(&p, false, &mut rng);
            assert!(t == 0 && l <= 16);
        }
    }

    #[test]
    fn batches_come_from_one_bucket_and_depend_only_on_seed_and_step() {
        let keys: Vec<(u32, u32)> = (0..11).map(|i| if i % 3 == 0 { (640, 384) } else { (512, 512) }).collect();
        // 4 in the wide bucket (2 batches of 2), 7 in the square one (3 + 1 partial).
        assert_eq!(batches_per_epoch(&keys, 2), 6);
        for epoch in 0..3 {
            let batches = epoch_batches(7, epoch, &keys, 2);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, (0..11).collect::<Vec<_>>(), "each example once per epoch");
            for b in &batches {
                assert!(b.iter().all(|&i| keys[i] == keys[b[0]]), "{b:?} mixes buckets");
            }
        }
        assert_ne!(epoch_batches(7, 0, &keys, 2), epoch_batches(7, 1, &keys, 2), "each epoch reshuffles");
        for m in 0..20 {
            assert_eq!(micro_batch(7, m, &keys, 2), epoch_batches(7, (m / 6) as u64, &keys, 2)[m % 6]);
        }
        assert_eq!(counts(&keys), [((512, 512), 7), ((640, 384), 4)]);
    }
}
