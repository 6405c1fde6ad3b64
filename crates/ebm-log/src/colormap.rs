//! A perceptual colour map computed here: viridis-like, interpolated in OKLab.
//!
//! The map passes through five anchor colours of matplotlib's viridis at t = 0, ¼, ½, ¾, 1
//! (#440154, #3b528b, #21918c, #5ec962, #fde725) and interpolates linearly between them in the
//! OKLab colour space, where Euclidean distance approximates perceived difference. Lightness
//! increases monotonically from dark purple to yellow, so the map reads correctly in greyscale
//! and for the common forms of colour blindness.

use std::sync::OnceLock;

const ANCHORS: [[u8; 3]; 5] =
    [[0x44, 0x01, 0x54], [0x3b, 0x52, 0x8b], [0x21, 0x91, 0x8c], [0x5e, 0xc9, 0x62], [0xfd, 0xe7, 0x25]];

fn srgb_to_linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(c: f64) -> f64 {
    if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// sRGB (0..=255) to OKLab `[L, a, b]`.
pub fn srgb_to_oklab(rgb: [u8; 3]) -> [f64; 3] {
    let [r, g, b] = rgb.map(|c| srgb_to_linear(f64::from(c) / 255.0));
    let l = 0.412_221_470_8 * r + 0.536_332_536_3 * g + 0.051_445_992_9 * b;
    let m = 0.211_903_498_2 * r + 0.680_699_545_1 * g + 0.107_396_956_6 * b;
    let s = 0.088_302_461_9 * r + 0.281_718_837_6 * g + 0.629_978_700_5 * b;
    let (l, m, s) = (l.cbrt(), m.cbrt(), s.cbrt());
    [
        0.210_454_255_3 * l + 0.793_617_785_0 * m - 0.004_072_046_8 * s,
        1.977_998_495_1 * l - 2.428_592_205_0 * m + 0.450_593_709_9 * s,
        0.025_904_037_1 * l + 0.782_771_766_2 * m - 0.808_675_766_0 * s,
    ]
}

/// OKLab `[L, a, b]` to sRGB (0..=255), clamping out-of-gamut values.
pub fn oklab_to_srgb(lab: [f64; 3]) -> [u8; 3] {
    let [ll, a, b] = lab;
    let l = ll + 0.396_337_777_4 * a + 0.215_803_757_3 * b;
    let m = ll - 0.105_561_345_8 * a - 0.063_854_172_8 * b;
    let s = ll - 0.089_484_177_5 * a - 1.291_485_548_0 * b;
    let (l, m, s) = (l * l * l, m * m * m, s * s * s);
    let r = 4.076_741_662_1 * l - 3.307_711_591_3 * m + 0.230_969_929_2 * s;
    let g = -1.268_438_004_6 * l + 2.609_757_401_1 * m - 0.341_319_396_5 * s;
    let bb = -0.004_196_086_3 * l - 0.703_418_614_7 * m + 1.707_614_701_0 * s;
    [r, g, bb].map(|c| (linear_to_srgb(c.clamp(0.0, 1.0)) * 255.0).round().clamp(0.0, 255.0) as u8)
}

fn compute(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let i = (t.floor() as usize).min(ANCHORS.len() - 2);
    let f = t - i as f64;
    let a = srgb_to_oklab(ANCHORS[i]);
    let b = srgb_to_oklab(ANCHORS[i + 1]);
    oklab_to_srgb([0, 1, 2].map(|k| a[k] + f * (b[k] - a[k])))
}

fn lut() -> &'static [[u8; 3]; 256] {
    static LUT: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    LUT.get_or_init(|| std::array::from_fn(|i| compute(i as f64 / 255.0)))
}

/// The colour for `t` in `[0, 1]` (clamped; NaN gives the lowest colour), from a 256-entry table.
pub fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    lut()[(t * 255.0).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oklab_round_trips_and_white_has_lightness_one() {
        let w = srgb_to_oklab([255, 255, 255]);
        assert!((w[0] - 1.0).abs() < 1e-4 && w[1].abs() < 1e-4 && w[2].abs() < 1e-4);
        for c in ANCHORS {
            assert_eq!(oklab_to_srgb(srgb_to_oklab(c)), c);
        }
    }

    #[test]
    fn endpoints_are_the_anchors_and_lightness_increases() {
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(compute(0.5), [0x21, 0x91, 0x8c]);
        assert_eq!(compute(0.25), [0x3b, 0x52, 0x8b]);
        assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        let ls: Vec<f64> = (0..256).map(|i| srgb_to_oklab(viridis(i as f64 / 255.0))[0]).collect();
        // Monotone up to the rounding of 8-bit channels.
        assert!(ls.windows(2).all(|w| w[1] > w[0] - 2e-3), "{ls:?}");
        assert!(ls[255] - ls[0] > 0.5);
    }
}
