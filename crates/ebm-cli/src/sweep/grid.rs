//! The grid of a sweep: `--grid key=v1,v2` axes (Hydra's multirun syntax), their cartesian product, and
//! `--seeds` lists.
//!
//! A grid value is TOML text, exactly what `--set key=value` takes: `0.1`, `"mala"`, `[16, 16]`, or an
//! inline table such as `{kind="score_matching",method={variant="denoising",sigma=0.1}}`. Values are split
//! on commas at the top level only, so commas inside `[]`, `{}` or quotes belong to the value.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One `--grid` axis: a dotted config key and the values it takes, as written (TOML text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// The dotted config key, e.g. `train.optim.lr`.
    pub key: String,
    /// The values, each TOML text (a bare word is taken as a string, as `--set` does).
    pub values: Vec<String>,
}

impl Axis {
    /// Parses `key=v1,v2,…`.
    ///
    /// # Errors
    /// No `=`, an empty key or key part, an empty value, or unbalanced brackets or quotes.
    pub fn parse(arg: &str) -> Result<Axis> {
        let Some((key, rest)) = arg.split_once('=') else {
            bail!("--grid '{arg}' must look like key=v1,v2 (e.g. train.optim.lr=1e-3,1e-4)");
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
            bail!("--grid '{arg}': the key '{key}' is empty or has an empty part");
        }
        let values = split_top_level(rest).with_context(|| format!("--grid '{arg}'"))?;
        Ok(Axis { key: key.to_string(), values })
    }

    /// The `--set` assignment for value `i`.
    pub fn assignment(&self, i: usize) -> String {
        format!("{}={}", self.key, self.values[i])
    }
}

/// Splits `s` on the commas that are outside brackets, braces and quotes (`"…"` with `\` escapes, `'…'`
/// literal), trimming each value.
///
/// # Errors
/// An empty value (`1,,2`), a closing bracket without its opening one, or an unclosed bracket or quote.
pub fn split_top_level(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut cur = String::new();
    for c in s.chars() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '[' | '{' => stack.push(c),
            ']' | '}' => {
                let open = if c == ']' { '[' } else { '{' };
                if stack.pop() != Some(open) {
                    bail!("'{c}' without a matching '{open}' in '{s}'");
                }
            }
            ',' if stack.is_empty() => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if let Some(q) = quote {
        bail!("unclosed {q} quote in '{s}'");
    }
    if let Some(open) = stack.last() {
        bail!("unclosed '{open}' in '{s}'");
    }
    out.push(cur);
    let out: Vec<String> = out.into_iter().map(|v| v.trim().to_string()).collect();
    if out.iter().any(String::is_empty) {
        bail!("empty value in '{s}' (values are separated by commas)");
    }
    Ok(out)
}

/// Parses all `--grid` arguments; a key given twice is an error.
///
/// # Errors
/// As [`Axis::parse`], or a repeated key.
pub fn parse_axes(args: &[String]) -> Result<Vec<Axis>> {
    let mut axes: Vec<Axis> = Vec::new();
    for a in args {
        let axis = Axis::parse(a)?;
        if axes.iter().any(|b| b.key == axis.key) {
            bail!("--grid key '{}' is given twice; list all its values in one --grid", axis.key);
        }
        axes.push(axis);
    }
    Ok(axes)
}

/// The grid points: the cartesian product of the axes, each point the list of its `key=value` assignments
/// in axis order. The first axis varies slowest. No axes: one point with no assignments.
pub fn points(axes: &[Axis]) -> Vec<Vec<String>> {
    let mut pts: Vec<Vec<String>> = vec![Vec::new()];
    for axis in axes {
        pts = pts
            .into_iter()
            .flat_map(|p| {
                (0..axis.values.len()).map(move |i| {
                    let mut q = p.clone();
                    q.push(axis.assignment(i));
                    q
                })
            })
            .collect();
    }
    pts
}

/// Parses `--seeds`: `0..5` (0 to 4, end excluded), `0..=4`, a list `0,3,7`, or one seed `3`.
///
/// # Errors
/// Anything else, an empty range, or a seed listed twice.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let bad = || {
        format!(
            "--seeds '{s}' is not a seed list: use a range 0..5 (seeds 0 to 4), an inclusive range 0..=4, or a \
             list 0,3,7"
        )
    };
    let num = |t: &str| t.trim().parse::<u64>().with_context(bad);
    let seeds: Vec<u64> = if let Some((a, b)) = s.split_once("..") {
        let (b, inclusive) = match b.strip_prefix('=') {
            Some(b) => (b, true),
            None => (b, false),
        };
        let (a, b) = (num(a)?, num(b)?);
        let end = if inclusive { b.checked_add(1).with_context(bad)? } else { b };
        if end <= a {
            bail!("--seeds '{s}' is an empty range (the end of a..b is excluded: 0..5 gives 0, 1, 2, 3, 4)");
        }
        (a..end).collect()
    } else {
        s.split(',').map(num).collect::<Result<_>>()?
    };
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        bail!("--seeds '{s}' lists a seed twice");
    }
    Ok(seeds)
}

/// Short label of a point: its assignments joined by spaces (`—` for the single point of an empty grid).
pub fn point_label(assignments: &[String]) -> String {
    if assignments.is_empty() {
        "—".into()
    } else {
        assignments.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_split_only_at_the_top_level() {
        assert_eq!(split_top_level("1e-3, 1e-4").unwrap(), ["1e-3", "1e-4"]);
        assert_eq!(split_top_level("[16,16],[32]").unwrap(), ["[16,16]", "[32]"]);
        assert_eq!(
            split_top_level(
                r#"{kind="score_matching",method={variant="denoising",sigma=0.1}},{kind="contrastive",k=5}"#
            )
            .unwrap(),
            [r#"{kind="score_matching",method={variant="denoising",sigma=0.1}}"#, r#"{kind="contrastive",k=5}"#]
        );
        assert_eq!(split_top_level(r#""a,b",'c,d',"e\",f""#).unwrap(), [r#""a,b""#, "'c,d'", r#""e\",f""#]);
        assert_eq!(split_top_level("mala").unwrap(), ["mala"]);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["1,,2", "", "[1,2", "{a=1", "1]", "\"abc", "[1}"] {
            assert!(split_top_level(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn axes_parse_and_refuse_repeats() {
        let a = Axis::parse("train.optim.lr=1e-3,1e-4").unwrap();
        assert_eq!(a.key, "train.optim.lr");
        assert_eq!(a.assignment(1), "train.optim.lr=1e-4");
        let e = Axis::parse("lr").unwrap_err().to_string();
        assert!(e.contains("key=v1,v2"), "{e}");
        assert!(Axis::parse("a..b=1").is_err());
        let e = parse_axes(&["a=1".into(), "a=2".into()]).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn points_are_the_product_with_the_first_axis_slowest() {
        let axes = parse_axes(&["a=1,2".into(), "b=x,y,z".into()]).unwrap();
        let p = points(&axes);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], ["a=1", "b=x"]);
        assert_eq!(p[2], ["a=1", "b=z"]);
        assert_eq!(p[3], ["a=2", "b=x"]);
        assert_eq!(points(&[]), vec![Vec::<String>::new()]);
    }

    #[test]
    fn grid_values_become_the_values_set_would_give() {
        let axes = parse_axes(&[r#"objective={kind="score_matching",method={variant="denoising",sigma=0.1}}"#.into()])
            .unwrap();
        let mut t = toml::Table::new();
        crate::spec::apply_override(&mut t, &points(&axes)[0][0]).unwrap();
        let sigma = t["objective"]["method"]["sigma"].as_float();
        assert_eq!(sigma, Some(0.1));
    }

    #[test]
    fn seeds_parse_in_every_form() {
        assert_eq!(parse_seeds("0..5").unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("2..=3").unwrap(), [2, 3]);
        assert_eq!(parse_seeds("0,3,7").unwrap(), [0, 3, 7]);
        assert_eq!(parse_seeds("4").unwrap(), [4]);
        for bad in ["5..5", "3..1", "a..3", "0..", "1,1", "-1", "0-4", ""] {
            let e = parse_seeds(bad).unwrap_err().to_string();
            assert!(e.contains("--seeds"), "{bad}: {e}");
        }
    }
}
