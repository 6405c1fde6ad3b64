//! Sampling compositions of analytic experts against exact answers: closed forms where they exist, a fine
//! grid otherwise. Experts are the 8 Gaussians (radius 2, std 0.1) rotated by 22.5° and split by attribute:
//! `right` (x > 0) and `upper` (y > 0) are equal mixtures of their 4 modes, normalised (`Z = 1`).
//!
//! Every test starts chains by importance resampling in a box ([`resample_in_box`]) and runs MALA on the
//! box-restricted composition, which keeps the restricted target exact. The tolerances are several standard
//! errors of the Monte Carlo estimate (stated at each check), so they hold for any seed.

use ebm_core::energy::compose::resample_in_box;
use ebm_core::energy::{BoxRestricted, Composition, EnergyModel, Gaussian, GaussianMixture, Offset};
use ebm_core::eval::{grid_log_z, GridSpec};
use ebm_core::sampler::{Init, Mala, MalaConfig, Sampler};
use tch::{Device, Kind, Tensor};

const STD: f64 = 0.1;

/// One libtorch thread: the test binaries of the workspace run side by side on a small machine, and
/// libtorch's thread pool slows down by an order of magnitude when its cores are busy.
fn one_thread() {
    tch::set_num_threads(1);
}

/// Mode k at angle 22.5° + 45°·k, radius 2.
fn centre(k: usize) -> [f64; 2] {
    let a = (22.5 + 45.0 * k as f64).to_radians();
    [2.0 * a.cos(), 2.0 * a.sin()]
}

fn expert(pred: impl Fn([f64; 2]) -> bool) -> GaussianMixture {
    let means: Vec<Vec<f64>> = (0..8).map(centre).filter(|c| pred(*c)).map(|c| c.to_vec()).collect();
    GaussianMixture::isotropic(&vec![1.0; means.len()], &means, STD, Device::Cpu).unwrap()
}

fn experts<'a>(right: &'a dyn EnergyModel, upper: &'a dyn EnergyModel) -> Vec<(String, Box<dyn EnergyModel + 'a>)> {
    vec![("right".into(), Box::new(right)), ("upper".into(), Box::new(upper))]
}

/// Importance resampling in `[-b, b]^D`, then MALA restricted to the box.
fn sample(m: &dyn EnergyModel, b: f64, n_prop: usize, n: usize, eps: f64, steps: usize) -> Tensor {
    let r = BoxRestricted::new(m, -b, b).unwrap();
    let x0 = resample_in_box(&r, -b, b, n_prop, n, Device::Cpu).unwrap();
    let out = Mala::new(MalaConfig { step_size: eps, record: false }).unwrap().run(&r, &x0, steps).unwrap();
    assert!(out.acceptance.unwrap() > 0.5, "MALA acceptance {:?}", out.acceptance);
    assert!(bool::try_from(out.x.abs().le(b).all()).unwrap(), "a sample left the box");
    out.x
}

/// Share of samples nearest each of the 8 modes.
fn mode_shares(x: &Tensor) -> Vec<f64> {
    let c: Vec<f64> = (0..8).flat_map(centre).collect();
    let c = Tensor::from_slice(&c).view([8, 2]);
    let d = (x.to_kind(Kind::Double).unsqueeze(1) - c.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double);
    let idx = Vec::<i64>::try_from(d.argmin(1, false)).unwrap();
    let mut s = vec![0.0; 8];
    for i in &idx {
        s[*i as usize] += 1.0 / idx.len() as f64;
    }
    s
}

fn share(mask: Tensor) -> f64 {
    f64::try_from(mask.to_kind(Kind::Double).mean(Kind::Double)).unwrap()
}

#[test]
fn and_of_right_and_upper_is_the_two_upper_right_modes_at_half_the_variance() {
    one_thread();
    let (right, upper) = (expert(|c| c[0] > 0.0), expert(|c| c[1] > 0.0));
    let and = Composition::parse("right & upper", experts(&right, &upper)).unwrap();
    let x = sample(&and, 3.0, 1_000_000, 4000, 0.002, 200);
    // exact: p_r·p_u ∝ Σ over the shared modes (0, 1) of N(μ, σ²/2 I), equal weights; no mass elsewhere
    let quadrant = share(x.select(1, 0).gt(0.0).logical_and(&x.select(1, 1).gt(0.0)));
    assert!(quadrant >= 0.99, "share in the upper-right quadrant {quadrant}");
    let s = mode_shares(&x);
    // importance resampling has an effective sample size ≈ 3500 here: sd of a share ≈ 0.009
    assert!((s[0] - 0.5).abs() < 0.05 && (s[1] - 0.5).abs() < 0.05, "mode shares {s:?}");
    // per-coordinate variance around the mode σ²/2 = 0.005; sd of the estimate ≈ 0.005·√(2/4000) ≈ 1.1e-4
    let c0 = Tensor::from_slice(&centre(0)).to_kind(Kind::Float);
    let near0 = x.index_select(
        0,
        &(x.shallow_clone() - &c0).square().sum_dim_intlist(1, false, Kind::Float).lt(0.25).nonzero().squeeze_dim(1),
    );
    let var = f64::try_from((near0 - c0).square().mean(Kind::Double)).unwrap();
    assert!((var - 0.005).abs() < 0.0008, "variance around mode 0: {var}");
}

#[test]
fn or_is_the_equal_mixture_of_normalised_experts_and_z_weighted_otherwise() {
    one_thread();
    let (right, upper) = (expert(|c| c[0] > 0.0), expert(|c| c[1] > 0.0));
    // ½ p_r + ½ p_u: the shared modes 0, 1 get 1/4 each, the others 1/8
    let or = Composition::parse("right | upper", experts(&right, &upper)).unwrap();
    let s = mode_shares(&sample(&or, 3.0, 1_000_000, 4000, 0.002, 100));
    let want = [0.25, 0.25, 0.125, 0.125, 0.0, 0.0, 0.125, 0.125];
    // effective sample size ≈ 18 000, 4000 samples: sd of a share ≤ 0.008
    for (g, w) in s.iter().zip(want) {
        assert!((g - w).abs() < 0.035, "OR mode shares {s:?}, want {want:?}");
    }
    // with Z_right = 3 (f_right + ln 3) OR is ¾ p_r + ¼ p_u: 1/4, 1/4 shared, 3/16 right only, 1/16 upper only
    let r3 = Offset::new(&right, 3f64.ln()).unwrap();
    let or3 = Composition::parse("right | upper", experts(&r3, &upper)).unwrap();
    let s = mode_shares(&sample(&or3, 3.0, 1_000_000, 4000, 0.002, 100));
    let want = [0.25, 0.25, 0.0625, 0.0625, 0.0, 0.0, 0.1875, 0.1875];
    for (g, w) in s.iter().zip(want) {
        assert!((g - w).abs() < 0.035, "Z-weighted OR mode shares {s:?}, want {want:?}");
    }
}

#[test]
fn not_of_two_gaussians_at_lambda_one_half_is_the_closed_form_gaussian() {
    one_thread();
    // a = N((1, 0), 0.5²), b = N((-1, 0), 0.5²): f_a - ½ f_b has precision (1 - ½)/0.25 = 2 (variance ½) and
    // mean (μ_a - ½ μ_b)/(1 - ½) = (3, 0).
    let a = Gaussian::isotropic(&[1.0, 0.0], 0.5, Device::Cpu).unwrap();
    let b = Gaussian::isotropic(&[-1.0, 0.0], 0.5, Device::Cpu).unwrap();
    let not = Composition::parse("a & 0.5*!b", vec![("a".into(), Box::new(&a)), ("b".into(), Box::new(&b))]).unwrap();
    let x = sample(&not, 10.0, 400_000, 4000, 0.1, 200).to_kind(Kind::Double);
    let mean = Vec::<f64>::try_from(x.mean_dim(0, false, Kind::Double)).unwrap();
    let var = Vec::<f64>::try_from(x.var_dim(0, true, false)).unwrap();
    // sd of the mean ≈ √(0.5/4000) = 0.011, of the variance ≈ 0.5·√(2/4000) = 0.011
    assert!((mean[0] - 3.0).abs() < 0.05 && mean[1].abs() < 0.05, "mean {mean:?}");
    assert!((var[0] - 0.5).abs() < 0.06 && (var[1] - 0.5).abs() < 0.06, "variance {var:?}");
}

#[test]
fn not_at_lambda_one_is_unbounded_and_in_a_box_a_truncated_exponential() {
    one_thread();
    // 1-D, a = N(1, 1), b = N(-1, 1): f_a - f_b = 2x, not normalisable on R. On [-1, 1] the density is
    // ∝ e^{2x}: P(x > 0) = (e² - 1)/(e² - e⁻²) = 0.88080, E[x] = coth 2 - ½ = 0.53730.
    let a = Gaussian::isotropic(&[1.0], 1.0, Device::Cpu).unwrap();
    let b = Gaussian::isotropic(&[-1.0], 1.0, Device::Cpu).unwrap();
    let not = Composition::negation(Box::new(&a), Box::new(&b), 1.0).unwrap();
    let far = Tensor::from_slice(&[10.0f64, 100.0]).view([2, 1]);
    assert_eq!(Vec::<f64>::try_from(not.f(&far)).unwrap(), vec![20.0, 200.0]);
    let r = BoxRestricted::new(&not, -1.0, 1.0).unwrap();
    let x0 = Init::Uniform { low: -1.0, high: 1.0 }.sample(8000, &[1], Device::Cpu);
    let out = Mala::new(MalaConfig { step_size: 0.05, record: false }).unwrap().run(&r, &x0, 400).unwrap();
    let pos = share(out.x.gt(0.0));
    let mean = f64::try_from(out.x.mean(Kind::Double)).unwrap();
    // sd of the share ≈ √(0.88·0.12/8000) = 0.0036, of the mean ≈ 0.43/√8000 = 0.005
    assert!((pos - 0.8808).abs() < 0.02, "share x > 0: {pos}");
    assert!((mean - 0.5373).abs() < 0.025, "mean {mean}");
}

#[test]
fn not_of_mixture_experts_in_the_data_box_matches_the_grid() {
    one_thread();
    // right & 0.2*!upper ∝ p_r / p_u^0.2 on [-3, 3]²: no closed form; the exact answer is a 400² grid.
    let (right, upper) = (expert(|c| c[0] > 0.0), expert(|c| c[1] > 0.0));
    let not = Composition::parse("right & 0.2*!upper", experts(&right, &upper)).unwrap();
    let boxed = BoxRestricted::new(&not, -3.0, 3.0).unwrap();
    let gz = grid_log_z(&boxed, &GridSpec::new([-3.0, 3.0, -3.0, 3.0], 400, 400).unwrap(), Device::Cpu).unwrap();
    let (xs, ys, dens) = (gz.grid.x_centers(), gz.grid.y_centers(), gz.density());
    let (mut lr, mut mx, mut my, mut tot) = (0.0, 0.0, 0.0, 0.0);
    for (j, y) in ys.iter().enumerate() {
        for (i, x) in xs.iter().enumerate() {
            let d = f64::from(dens[j * 400 + i]);
            tot += d;
            mx += d * x;
            my += d * y;
            if *x > 0.0 && *y < 0.0 {
                lr += d;
            }
        }
    }
    let (lr, mx, my) = (lr / tot, mx / tot, my / tot);
    // the target lives in the lower-right quadrant, pushed away from the upper modes
    assert!(lr > 0.95, "grid share of the lower-right quadrant {lr}");
    let x = sample(&not, 3.0, 1_000_000, 4000, 0.002, 200);
    let got_lr = share(x.select(1, 0).gt(0.0).logical_and(&x.select(1, 1).lt(0.0)));
    let m = Vec::<f64>::try_from(x.to_kind(Kind::Double).mean_dim(0, false, Kind::Double)).unwrap();
    // the mass sits in one blob of std ≈ 0.11: sd of the mean ≤ 0.11/√(effective sample size ≈ 4000) ≈ 0.002
    assert!((got_lr - lr).abs() < 0.02, "lower-right share {got_lr} vs grid {lr}");
    assert!((m[0] - mx).abs() < 0.03 && (m[1] - my).abs() < 0.03, "mean {m:?} vs grid ({mx}, {my})");
}
