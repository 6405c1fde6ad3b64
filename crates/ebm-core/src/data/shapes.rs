//! Procedurally generated shapes images with exact attribute detectors.
//!
//! Each image is `[3, S, S]` (RGB in `[0, 1]`, black background) with one filled shape of one pure colour:
//!
//! | attribute | values                       | how it is drawn                                                   |
//! |-----------|------------------------------|-------------------------------------------------------------------|
//! | shape     | `circle`, `square`, `triangle` | pixels with `(dx²+dy²) ≤ (h+½)²`; `|dx|,|dy| ≤ h`; apex-up isosceles, row `r` of `2h+1` half-width `⌊r/2⌋` |
//! | colour    | `red`, `green`, `blue`       | that channel is 1 on the shape                                     |
//! | size      | `small`, `large`             | half-extent `h` = `small` or `large` pixels (box `2h+1`)            |
//! | position  | `left`, `right`              | centre column `< S/2` or `≥ S/2` (centres are uniform over the places where the shape fits) |
//!
//! Attribute combinations can be held out of the data with expressions over these names (e.g.
//! `"triangle & blue"`, see [`crate::expr::Expression`]).
//!
//! The [`ShapeDetector`] reads attributes back from any image: the foreground is where the brightest channel
//! exceeds ½; shape, size and position come from the template (every shape, size and centre the generator
//! can draw) with the highest intersection-over-union with the foreground, and the colour is the channel
//! with the largest mean over the foreground. On generated images it is exact (IoU 1 with the true
//! template); on model samples it reports what a sample looks like most, with the IoU as a quality score.
//!
//! Generation uses `rand`'s `StdRng` seeded by the caller, independent of libtorch's RNG.

use crate::error::{invalid, Result};
use crate::expr::Expression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The shape attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// A filled axis-aligned square.
    Square,
    /// A filled apex-up isosceles triangle.
    Triangle,
}

/// The colour attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    /// Channel 0.
    Red,
    /// Channel 1.
    Green,
    /// Channel 2.
    Blue,
}

/// The size attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// Half-extent [`ShapesConfig::small`].
    Small,
    /// Half-extent [`ShapesConfig::large`].
    Large,
}

/// The position attribute (horizontal half of the image the centre is in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Centre column `< S/2`.
    Left,
    /// Centre column `≥ S/2`.
    Right,
}

const SHAPES: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];
const COLOURS: [Colour; 3] = [Colour::Red, Colour::Green, Colour::Blue];
const SIZES: [Size; 2] = [Size::Small, Size::Large];

/// An attribute type: its values index the labels of conditional models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeKind {
    /// `circle`, `square`, `triangle`.
    Shape,
    /// `red`, `green`, `blue`.
    Colour,
    /// `small`, `large`.
    Size,
    /// `left`, `right`.
    Position,
}

impl AttributeKind {
    /// Every kind, in a fixed order.
    pub fn all() -> [AttributeKind; 4] {
        [AttributeKind::Shape, AttributeKind::Colour, AttributeKind::Size, AttributeKind::Position]
    }

    /// The kind's name, e.g. `"colour"`.
    pub fn name(&self) -> &'static str {
        match self {
            AttributeKind::Shape => "shape",
            AttributeKind::Colour => "colour",
            AttributeKind::Size => "size",
            AttributeKind::Position => "position",
        }
    }

    /// The value names, in label order.
    pub fn values(&self) -> &'static [&'static str] {
        match self {
            AttributeKind::Shape => &["circle", "square", "triangle"],
            AttributeKind::Colour => &["red", "green", "blue"],
            AttributeKind::Size => &["small", "large"],
            AttributeKind::Position => &["left", "right"],
        }
    }

    /// The label of a value name, or an error listing the valid ones.
    pub fn index_of(&self, value: &str) -> Result<i64> {
        self.values().iter().position(|v| *v == value).map(|i| i as i64).ok_or_else(|| {
            invalid(self.name(), format!("unknown value '{value}'; valid values: {}", self.values().join(", ")))
        })
    }

    /// The kind a value name belongs to, if any.
    pub fn of_value(value: &str) -> Option<AttributeKind> {
        Self::all().into_iter().find(|k| k.values().contains(&value))
    }
}

/// Every attribute value name (what expressions over shapes images may use).
pub fn attribute_names() -> Vec<&'static str> {
    AttributeKind::all().iter().flat_map(|k| k.values().iter().copied()).collect()
}

/// The attributes of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeAttrs {
    /// Shape.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    /// Size.
    pub size: Size,
    /// Centre column.
    pub cx: i64,
    /// Centre row.
    pub cy: i64,
    /// Left or right half (from `cx`).
    pub position: Position,
}

impl ShapeAttrs {
    /// The label of each kind: the index of its value in [`AttributeKind::values`].
    pub fn label(&self, kind: AttributeKind) -> i64 {
        match kind {
            AttributeKind::Shape => SHAPES.iter().position(|s| *s == self.shape).unwrap_or(0) as i64,
            AttributeKind::Colour => COLOURS.iter().position(|c| *c == self.colour).unwrap_or(0) as i64,
            AttributeKind::Size => SIZES.iter().position(|s| *s == self.size).unwrap_or(0) as i64,
            AttributeKind::Position => i64::from(self.position == Position::Right),
        }
    }

    /// Whether the image has the attribute value `name` (e.g. `"blue"`).
    pub fn has(&self, name: &str) -> bool {
        AttributeKind::of_value(name).is_some_and(|k| k.values()[self.label(k) as usize] == name)
    }
}

/// Configuration of the shapes data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesConfig {
    /// Image side S (images are `[3, S, S]`).
    pub image_size: i64,
    /// Half-extent of small shapes (box side `2·small + 1`).
    pub small: i64,
    /// Half-extent of large shapes.
    pub large: i64,
    /// Attribute combinations never generated, as expressions over the value names (e.g. `"triangle & blue"`).
    pub held_out: Vec<String>,
    /// Centres at most this many pixels (in each direction) from the image centre `(S/2, S/2)`, where the
    /// shape fits; `None`: anywhere it fits.
    pub max_offset: Option<i64>,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig { image_size: 16, small: 3, large: 5, held_out: vec!["triangle & blue".into()], max_offset: None }
    }
}

/// Images and their attributes.
#[derive(Debug)]
pub struct ShapesData {
    /// `[N, 3, S, S]`, f32 in `{0, 1}`, on the CPU.
    pub images: Tensor,
    /// One entry per image.
    pub attrs: Vec<ShapeAttrs>,
}

impl ShapesData {
    /// The labels of one attribute kind.
    ///
    /// # Shapes
    /// → `[N]` (int64, CPU).
    pub fn labels(&self, kind: AttributeKind) -> Tensor {
        let v: Vec<i64> = self.attrs.iter().map(|a| a.label(kind)).collect();
        Tensor::from_slice(&v)
    }

    /// Joint labels over several kinds, mixed radix in the given order (see [`joint_label_names`]).
    ///
    /// # Shapes
    /// → `[N]` (int64, CPU).
    pub fn joint_labels(&self, kinds: &[AttributeKind]) -> Tensor {
        let v: Vec<i64> = self.attrs.iter().map(|a| joint_label(kinds, |k| a.label(k))).collect();
        Tensor::from_slice(&v)
    }
}

fn joint_label(kinds: &[AttributeKind], label: impl Fn(AttributeKind) -> i64) -> i64 {
    kinds.iter().fold(0, |acc, k| acc * k.values().len() as i64 + label(*k))
}

/// The names of the joint labels over `kinds`, in label order, e.g. `"circle & red"` for
/// `[Shape, Colour]`: each is an expression over value names.
pub fn joint_label_names(kinds: &[AttributeKind]) -> Vec<String> {
    let mut names = vec![String::new()];
    for k in kinds {
        names = names
            .iter()
            .flat_map(|prefix| {
                k.values()
                    .iter()
                    .map(move |v| if prefix.is_empty() { v.to_string() } else { format!("{prefix} & {v}") })
            })
            .collect();
    }
    names
}

impl ShapesConfig {
    /// Checks sizes and the held-out expressions (unknown names are errors pointing at them).
    pub fn validate(&self) -> Result<()> {
        if !(1 <= self.small && self.small < self.large) {
            return Err(invalid(
                "shapes.small/large",
                format!("need 1 ≤ small < large, got {} and {}", self.small, self.large),
            ));
        }
        if self.image_size < 2 * self.large + 2 {
            return Err(invalid(
                "shapes.image_size",
                format!("must be ≥ 2·large + 2 = {} so a large shape fits in two places", 2 * self.large + 2),
            ));
        }
        if let Some(o) = self.max_offset {
            if o < 0 {
                return Err(invalid("shapes.max_offset", format!("must be ≥ 0, got {o}")));
            }
        }
        self.held_out_expressions()?;
        Ok(())
    }

    /// The centres (each coordinate) where a shape of half-extent `h` may be drawn: `[lo, hi)`.
    pub fn centre_range(&self, h: i64) -> (i64, i64) {
        let s = self.image_size;
        let (mut lo, mut hi) = (h, s - h);
        if let Some(o) = self.max_offset {
            lo = lo.max(s / 2 - o);
            hi = hi.min(s / 2 + o + 1);
        }
        (lo, hi.max(lo + 1).min(s - h))
    }

    fn held_out_expressions(&self) -> Result<Vec<Expression>> {
        let names = attribute_names();
        self.held_out.iter().map(|h| Ok(Expression::parse_known(h, &names)?)).collect()
    }

    /// Half-extent of a size.
    pub fn half_extent(&self, size: Size) -> i64 {
        match size {
            Size::Small => self.small,
            Size::Large => self.large,
        }
    }

    /// Whether attributes fall in a held-out combination.
    pub fn is_held_out(&self, a: &ShapeAttrs) -> Result<bool> {
        Ok(self.held_out_expressions()?.iter().any(|e| e.satisfied_by(&|n| a.has(n))))
    }

    fn position_of(&self, cx: i64) -> Position {
        if cx < self.image_size / 2 {
            Position::Left
        } else {
            Position::Right
        }
    }

    /// Draws `n` images with uniformly random shape, colour, size and centre, skipping held-out
    /// combinations; deterministic for a `seed`.
    pub fn generate(&self, n: usize, seed: u64) -> Result<ShapesData> {
        self.validate()?;
        let held = self.held_out_expressions()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let s = self.image_size;
        let px = (3 * s * s) as usize;
        let mut data = vec![0f32; n * px];
        let mut attrs = Vec::with_capacity(n);
        let mut tries = 0usize;
        while attrs.len() < n {
            tries += 1;
            if tries > 1000 + 100 * n {
                return Err(invalid("shapes.held_out", format!("{:?} excludes (almost) every image", self.held_out)));
            }
            let shape = SHAPES[rng.random_range(0..3)];
            let colour = COLOURS[rng.random_range(0..3)];
            let size = SIZES[rng.random_range(0..2)];
            let h = self.half_extent(size);
            let (lo, hi) = self.centre_range(h);
            let cx = rng.random_range(lo..hi);
            let cy = rng.random_range(lo..hi);
            let a = ShapeAttrs { shape, colour, size, cx, cy, position: self.position_of(cx) };
            if held.iter().any(|e| e.satisfied_by(&|nm| a.has(nm))) {
                continue;
            }
            let k = attrs.len();
            let ch = a.label(AttributeKind::Colour);
            for (i, on) in shape_mask(shape, h, cx, cy, s).into_iter().enumerate() {
                if on {
                    data[k * px + (ch * s * s) as usize + i] = 1.0;
                }
            }
            attrs.push(a);
        }
        let images = Tensor::from_slice(&data).view([n as i64, 3, s, s]);
        Ok(ShapesData { images, attrs })
    }

    /// Renders one image from its attributes (held-out combinations included).
    ///
    /// # Shapes
    /// → `[3, S, S]` (f32, CPU).
    pub fn render(&self, shape: Shape, colour: Colour, size: Size, cx: i64, cy: i64) -> Result<Tensor> {
        self.validate()?;
        let (s, h) = (self.image_size, self.half_extent(size));
        if !(h..s - h).contains(&cx) || !(h..s - h).contains(&cy) {
            return Err(invalid(
                "shapes.render",
                format!("centre ({cx}, {cy}) does not fit a shape of half-extent {h}"),
            ));
        }
        let mut data = vec![0f32; (3 * s * s) as usize];
        let ch = COLOURS.iter().position(|c| *c == colour).unwrap_or(0) as i64;
        for (i, on) in shape_mask(shape, h, cx, cy, s).into_iter().enumerate() {
            if on {
                data[(ch * s * s) as usize + i] = 1.0;
            }
        }
        Ok(Tensor::from_slice(&data).view([3, s, s]))
    }
}

/// The pixels (row-major, `S·S`) covered by a shape of half-extent `h` centred at `(cx, cy)`.
fn shape_mask(shape: Shape, h: i64, cx: i64, cy: i64, s: i64) -> Vec<bool> {
    let mut m = vec![false; (s * s) as usize];
    for py in 0..s {
        for px in 0..s {
            let (dx, dy) = (px - cx, py - cy);
            let on = match shape {
                Shape::Square => dx.abs() <= h && dy.abs() <= h,
                Shape::Circle => 4 * (dx * dx + dy * dy) <= (2 * h + 1) * (2 * h + 1),
                Shape::Triangle => {
                    let r = dy + h;
                    (0..=2 * h).contains(&r) && dx.abs() <= r / 2
                }
            };
            m[(py * s + px) as usize] = on;
        }
    }
    m
}

/// The foreground of images, where the brightest channel exceeds ½ (what the [`ShapeDetector`] reads and what
/// [`crate::objective::balance_lit_pixels`] counts as lit).
///
/// # Shapes
/// `x: [B, C, H, W]` → bool `[B, 1, H, W]`.
pub fn foreground(x: &Tensor) -> Tensor {
    x.amax([1], true).gt(0.5)
}

/// What the detector reads from one image. Every attribute is `None` when the image has no foreground;
/// shape, size and position are `None` when no template matches well enough (see
/// [`ShapeDetector::with_min_iou`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Best-matching shape.
    pub shape: Option<Shape>,
    /// Channel with the largest mean over the foreground.
    pub colour: Option<Colour>,
    /// Size of the best-matching template.
    pub size: Option<Size>,
    /// Half the centre of the best-matching template is in.
    pub position: Option<Position>,
    /// Intersection-over-union of the foreground with the best template (1 for generated images).
    pub iou: f64,
    /// Number of foreground pixels.
    pub foreground: usize,
}

impl Detection {
    /// Whether the detected attributes include the value `name`.
    pub fn has(&self, name: &str) -> bool {
        match AttributeKind::of_value(name) {
            Some(AttributeKind::Shape) => {
                self.shape.is_some_and(|s| AttributeKind::Shape.values()[shape_idx(s)] == name)
            }
            Some(AttributeKind::Colour) => {
                self.colour.is_some_and(|c| AttributeKind::Colour.values()[colour_idx(c)] == name)
            }
            Some(AttributeKind::Size) => {
                self.size.is_some_and(|s| AttributeKind::Size.values()[usize::from(s == Size::Large)] == name)
            }
            Some(AttributeKind::Position) => self
                .position
                .is_some_and(|p| AttributeKind::Position.values()[usize::from(p == Position::Right)] == name),
            None => false,
        }
    }

    /// Whether the image satisfies `e` (a boolean formula over value names; an empty image satisfies no
    /// name).
    pub fn satisfies(&self, e: &Expression) -> bool {
        e.satisfied_by(&|n| self.has(n))
    }
}

fn shape_idx(s: Shape) -> usize {
    SHAPES.iter().position(|x| *x == s).unwrap_or(0)
}

fn colour_idx(c: Colour) -> usize {
    COLOURS.iter().position(|x| *x == c).unwrap_or(0)
}

/// Reads shape, colour, size and position back from images (see the module documentation).
#[derive(Debug)]
pub struct ShapeDetector {
    templates: Tensor,
    params: Vec<(Shape, Size, i64)>,
    image_size: i64,
    min_iou: f64,
}

impl ShapeDetector {
    /// Builds every template the generator can draw for `cfg` (held-out combinations included: they
    /// concern colour, which templates ignore).
    pub fn new(cfg: &ShapesConfig) -> Result<Self> {
        cfg.validate()?;
        let s = cfg.image_size;
        let mut rows: Vec<f32> = Vec::new();
        let mut params = Vec::new();
        for shape in SHAPES {
            for size in SIZES {
                let h = cfg.half_extent(size);
                for cy in h..s - h {
                    for cx in h..s - h {
                        rows.extend(shape_mask(shape, h, cx, cy, s).into_iter().map(|b| if b { 1f32 } else { 0.0 }));
                        params.push((shape, size, cx));
                    }
                }
            }
        }
        let templates = Tensor::from_slice(&rows).view([params.len() as i64, s * s]);
        Ok(ShapeDetector { templates, params, image_size: s, min_iou: 0.0 })
    }

    /// Reports shape, size and position only when the best template's IoU with the foreground is at least
    /// `min_iou` (in `[0, 1]`; 0, the default, always reports them). Colour is reported for any foreground.
    pub fn with_min_iou(mut self, min_iou: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_iou) {
            return Err(invalid("detector.min_iou", format!("must be in [0, 1], got {min_iou}")));
        }
        self.min_iou = min_iou;
        Ok(self)
    }

    /// Detects the attributes of every image (values in `[0, 1]`; the foreground is where the brightest
    /// channel exceeds ½).
    ///
    /// # Shapes
    /// `images: [N, 3, S, S]` (any float kind, any device).
    pub fn detect(&self, images: &Tensor) -> Result<Vec<Detection>> {
        let s = self.image_size;
        crate::check::check_input(&[3, s, s], images, "shapes detector images")?;
        let x = images.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        let n = x.size()[0];
        let fg = foreground(&x).to_kind(Kind::Float).view([n, s * s]);
        let count = fg.sum_dim_intlist(1, false, Kind::Float);
        let inter = fg.matmul(&self.templates.transpose(0, 1));
        let area = self.templates.sum_dim_intlist(1, false, Kind::Float);
        let union = count.unsqueeze(1) + area.unsqueeze(0) - &inter;
        let (best_iou, best) = (inter / union.clamp_min(1.0)).max_dim(1, false);
        let colour_sum = (&x * fg.view([n, 1, s, s])).sum_dim_intlist([2, 3].as_slice(), false, Kind::Float);
        let colour = colour_sum.argmax(1, false);
        let count = Vec::<f32>::try_from(&count)?;
        let best_iou = Vec::<f32>::try_from(&best_iou)?;
        let best = Vec::<i64>::try_from(&best)?;
        let colour = Vec::<i64>::try_from(&colour)?;
        let half = s / 2;
        Ok((0..n as usize)
            .map(|i| {
                if count[i] < 0.5 {
                    return Detection {
                        shape: None,
                        colour: None,
                        size: None,
                        position: None,
                        iou: 0.0,
                        foreground: 0,
                    };
                }
                let (shape, size, cx) = self.params[best[i] as usize];
                let iou = f64::from(best_iou[i]);
                let ok = iou >= self.min_iou;
                Detection {
                    shape: ok.then_some(shape),
                    colour: Some(COLOURS[colour[i] as usize]),
                    size: ok.then_some(size),
                    position: ok.then_some(if cx < half { Position::Left } else { Position::Right }),
                    iou,
                    foreground: count[i] as usize,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_their_pixel_counts() {
        // h = 3: square 7² = 49; disc (dx²+dy²) ≤ 12.25 drops 3 pixels per corner → 37;
        // triangle rows of width 1,1,3,3,5,5,7 → 25
        let count = |sh| shape_mask(sh, 3, 5, 5, 16).iter().filter(|b| **b).count();
        assert_eq!((count(Shape::Square), count(Shape::Circle), count(Shape::Triangle)), (49, 37, 25));
        let cfg = ShapesConfig::default();
        let img = cfg.render(Shape::Triangle, Colour::Blue, Size::Small, 5, 5).unwrap();
        assert_eq!(f64::try_from(img.sum(Kind::Double)).unwrap(), 25.0);
        assert_eq!(f64::try_from(img.get(2).sum(Kind::Double)).unwrap(), 25.0);
        // apex at the top row of the box, full width at the bottom
        assert_eq!(f64::try_from(img.get(2).get(2).sum(Kind::Double)).unwrap(), 1.0);
        assert_eq!(f64::try_from(img.get(2).get(8).sum(Kind::Double)).unwrap(), 7.0);
        assert!(cfg.render(Shape::Circle, Colour::Red, Size::Large, 2, 8).is_err());
    }

    #[test]
    fn generation_is_seeded_and_skips_held_out_combinations() {
        let cfg = ShapesConfig::default();
        let a = cfg.generate(600, 3).unwrap();
        let b = cfg.generate(600, 3).unwrap();
        assert!(a.images.equal(&b.images));
        assert_eq!(a.images.size(), vec![600, 3, 16, 16]);
        assert!(!a.attrs.iter().any(|t| t.shape == Shape::Triangle && t.colour == Colour::Blue));
        assert!(a.attrs.iter().any(|t| t.shape == Shape::Triangle && t.colour == Colour::Red));
        assert!(a.attrs.iter().any(|t| t.shape == Shape::Circle && t.colour == Colour::Blue));
        assert!(cfg
            .is_held_out(&ShapeAttrs {
                shape: Shape::Triangle,
                colour: Colour::Blue,
                size: Size::Large,
                cx: 8,
                cy: 8,
                position: Position::Right
            })
            .unwrap());
        // labels and joint labels (shape-major)
        let t = &a.attrs[0];
        assert_eq!(
            i64::try_from(a.joint_labels(&[AttributeKind::Shape, AttributeKind::Colour]).get(0)).unwrap(),
            3 * t.label(AttributeKind::Shape) + t.label(AttributeKind::Colour)
        );
        assert_eq!(joint_label_names(&[AttributeKind::Shape, AttributeKind::Colour])[8], "triangle & blue");
        assert_eq!(i64::try_from(a.labels(AttributeKind::Size).get(0)).unwrap(), t.label(AttributeKind::Size));
    }

    #[test]
    fn detector_is_exact_on_generated_images() {
        let cfg = ShapesConfig { held_out: vec![], ..Default::default() };
        let d = ShapeDetector::new(&cfg).unwrap();
        let data = cfg.generate(1000, 11).unwrap();
        let det = d.detect(&data.images).unwrap();
        for (a, r) in data.attrs.iter().zip(&det) {
            assert_eq!(r.shape, Some(a.shape), "{a:?}");
            assert_eq!(r.colour, Some(a.colour), "{a:?}");
            assert_eq!(r.size, Some(a.size), "{a:?}");
            assert_eq!(r.position, Some(a.position), "{a:?}");
            assert!((r.iou - 1.0).abs() < 1e-6);
            for n in attribute_names() {
                assert_eq!(r.has(n), a.has(n), "{n} on {a:?}");
            }
        }
        // an empty image satisfies nothing; a noisy one still reads the right colour
        let empty = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let r = &d.detect(&empty).unwrap()[0];
        assert_eq!((r.shape, r.foreground), (None, 0));
        assert!(r.satisfies(&Expression::parse("!red").unwrap()));
        assert!(!r.satisfies(&Expression::parse("red | green | blue").unwrap()));
        let e = Expression::parse("triangle & blue").unwrap();
        let img = cfg.render(Shape::Triangle, Colour::Blue, Size::Large, 9, 7).unwrap().unsqueeze(0);
        assert!(d.detect(&img).unwrap()[0].satisfies(&e));
        assert!(d.detect(&Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu))).is_err());
        // a stray pixel next to a small square: IoU 49/50 passes a 0.9 threshold; a lone pixel's best IoU is
        // 1/25 (the smallest template, a small triangle), below it: colour only
        let strict = ShapeDetector::new(&cfg).unwrap().with_min_iou(0.9).unwrap();
        let sq = cfg.render(Shape::Square, Colour::Green, Size::Small, 5, 5).unwrap();
        let _ = sq.get(1).get(12).get(12).fill_(1.0);
        let r = &strict.detect(&sq.unsqueeze(0)).unwrap()[0];
        assert_eq!((r.shape, r.colour), (Some(Shape::Square), Some(Colour::Green)));
        assert!((r.iou - 49.0 / 50.0).abs() < 1e-6);
        let dot = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let _ = dot.get(0).get(2).get(3).get(3).fill_(1.0);
        let r = &strict.detect(&dot).unwrap()[0];
        assert_eq!((r.shape, r.colour, r.foreground), (None, Some(Colour::Blue), 1));
        assert!((r.iou - 1.0 / 25.0).abs() < 1e-6);
        assert!(ShapeDetector::new(&cfg).unwrap().with_min_iou(1.5).is_err());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let e = ShapesConfig { held_out: vec!["triangle & purple".into()], ..Default::default() }.validate();
        let s = e.unwrap_err().to_string();
        assert!(s.contains("unknown name 'purple' at column 12") && s.contains("blue, circle"), "{s}");
        let e = ShapesConfig { small: 5, large: 5, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("small < large"), "{e}");
        let e = ShapesConfig { image_size: 8, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("image_size"), "{e}");
        assert!(AttributeKind::Colour.index_of("teal").unwrap_err().to_string().contains("red, green, blue"));
        assert_eq!(AttributeKind::Shape.index_of("triangle").unwrap(), 2);
    }
}
