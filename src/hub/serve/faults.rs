//! Fault injection for `hfsky hub serve --faults`: 500s, 429s with Retry-After, and dropped
//! connections at given rates, so retry paths are tested against a real server; and, on the
//! inference routes only, the providers' 402 (credits), 404 (not deployed) and 429.

use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    ServerError,
    TooManyRequests,
    Drop,
}

/// A refusal of an inference route, as the router sends them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InferenceFault {
    PaymentRequired,
    NotDeployed,
    TooManyRequests,
}

#[derive(Debug)]
pub struct Faults {
    pub server_error: f64,
    pub too_many: f64,
    pub drop: f64,
    pub infer_402: f64,
    pub infer_404: f64,
    pub infer_429: f64,
    pub retry_after_secs: u64,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Faults {
    /// `SPEC` = comma-separated `500=RATE`, `429=RATE`, `drop=RATE`, `retry-after=SECS`, `seed=N`,
    /// and for the inference routes `infer-402=RATE`, `infer-404=RATE`, `infer-429=RATE`.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        use rand::SeedableRng;
        let mut f = Faults {
            server_error: 0.0,
            too_many: 0.0,
            drop: 0.0,
            infer_402: 0.0,
            infer_404: 0.0,
            infer_429: 0.0,
            retry_after_secs: 1,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(0)),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("--faults: {part:?} is not KEY=VALUE"))?;
            let rate = || -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("--faults: {k} needs a rate between 0 and 1, got {v:?}"))
            };
            match k {
                "500" => f.server_error = rate()?,
                "429" => f.too_many = rate()?,
                "drop" => f.drop = rate()?,
                "infer-402" => f.infer_402 = rate()?,
                "infer-404" => f.infer_404 = rate()?,
                "infer-429" => f.infer_429 = rate()?,
                "retry-after" => f.retry_after_secs = v.parse().map_err(|_| format!("--faults: bad retry-after {v:?}"))?,
                "seed" => {
                    let seed = v.parse().map_err(|_| format!("--faults: bad seed {v:?}"))?;
                    f.rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(seed));
                }
                _ => {
                    return Err(format!("--faults: unknown key {k:?} (expected 500, 429, drop, infer-402, infer-404, infer-429, retry-after, seed)"))
                }
            }
        }
        if f.server_error + f.too_many + f.drop > 1.0 {
            return Err("--faults: the rates add up to more than 1".into());
        }
        if f.infer_402 + f.infer_404 + f.infer_429 > 1.0 {
            return Err("--faults: the infer-* rates add up to more than 1".into());
        }
        Ok(f)
    }

    pub fn draw(&self) -> Option<Fault> {
        use rand::Rng;
        let x: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        if x < self.server_error {
            Some(Fault::ServerError)
        } else if x < self.server_error + self.too_many {
            Some(Fault::TooManyRequests)
        } else if x < self.server_error + self.too_many + self.drop {
            Some(Fault::Drop)
        } else {
            None
        }
    }
}

impl Faults {
    /// Drawn once per inference request, after [`draw`](Self::draw).
    pub fn draw_inference(&self) -> Option<InferenceFault> {
        use rand::Rng;
        let x: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        let (a, b, c) = (self.infer_402, self.infer_404, self.infer_429);
        if x < a {
            Some(InferenceFault::PaymentRequired)
        } else if x < a + b {
            Some(InferenceFault::NotDeployed)
        } else if x < a + b + c {
            Some(InferenceFault::TooManyRequests)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_draws_at_about_the_rate() {
        let f = Faults::parse("500=0.2,429=0.1,drop=0.1,seed=3").unwrap();
        let n = 10_000;
        let hits = (0..n).filter(|_| f.draw() == Some(Fault::ServerError)).count() as f64 / n as f64;
        assert!((hits - 0.2).abs() < 0.03, "{hits}");
        assert!(Faults::parse("500=2").is_err());
        assert!(Faults::parse("boom=0.1").is_err());
        assert!(Faults::parse("500=0.6,429=0.6").is_err());
        assert!(Faults::parse("infer-402=0.6,infer-429=0.6").is_err());
        let f = Faults::parse("infer-402=1").unwrap();
        assert_eq!((f.draw(), f.draw_inference()), (None, Some(InferenceFault::PaymentRequired)));
        assert_eq!(Faults::parse("infer-429=0.5").unwrap().draw(), None);
    }
}
