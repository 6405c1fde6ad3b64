//! The image recipe's pieces together: a conv energy (with and without spectral norm) trained by the replay
//! buffer on tiny images. The contrastive loss runs the network twice (data and negatives) before one
//! backward pass, which spectral norm's in-place power iteration must survive.

use ebm_core::energy::{Activation, ConvConfig, ConvEnergy, EnergyModel};
use ebm_core::objective::{ContrastiveConfig, Negatives, ObjectiveConfig};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{BufferConfig, Init, LangevinConfig, SamplerConfig};
use ebm_core::train::{MemorySink, TensorData, TrainConfig, Trainer};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn replay_training_of_a_conv_energy_with_and_without_spectral_norm() {
    tch::set_num_threads(1); // tiny tensors: more threads only add contention
    for (sn, activation) in [(false, Activation::Silu), (true, Activation::LeakyRelu)] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConvConfig {
            image_size: [6, 6],
            channels: vec![8, 8],
            spectral_norm: sn,
            activation,
            ..Default::default()
        };
        let model = ConvEnergy::new(&vs.root(), &cfg).unwrap();
        let objective = ObjectiveConfig::Contrastive(ContrastiveConfig {
            negatives: Negatives::Replay(BufferConfig {
                capacity: 64,
                restart_prob: 0.05,
                init: Init::Uniform { low: -1.0, high: 1.0 },
            }),
            k: 5,
            sampler: SamplerConfig::Langevin(LangevinConfig {
                step_size: 10.0,
                noise: Some(0.005),
                grad_clip: Some(0.03),
                clamp: Some([-1.0, 1.0]),
                record: false,
            }),
            alpha: 0.1,
        })
        .build(&model, Device::Cpu)
        .unwrap();
        let train = TrainConfig {
            iters: 5,
            batch_size: 8,
            optim: AdamConfig { lr: 1e-3, betas: [0.0, 0.999], ..Default::default() },
            log_every: 1,
            ..Default::default()
        };
        let before: Vec<Tensor> = vs.trainable_variables().iter().map(|t| t.detach().copy()).collect();
        let mut trainer = Trainer::new(train, &vs, &model, objective, 0).unwrap();
        // data: a bright left half, in [-1, 1]
        let data = Tensor::full([32, 1, 6, 6], -1.0, (Kind::Float, Device::Cpu));
        let _ = data.narrow(3, 0, 3).fill_(1.0);
        let mut sink = MemorySink::default();
        let out = trainer.run(&mut TensorData::new(data).unwrap(), &mut sink, None).unwrap();
        assert_eq!(out.steps, 5, "spectral norm {sn}");
        let moved = vs.trainable_variables().iter().zip(&before).any(|(a, b)| !a.equal(b));
        assert!(moved, "parameters did not change (spectral norm {sn})");
        assert!(sink.scalars.iter().all(|(_, _, v)| v.is_finite()));
        // negatives stay in the data box
        let neg = trainer.objective().state().unwrap();
        assert!(f64::try_from(neg.abs().max()).unwrap() <= 1.0);
        assert_eq!(model.f(&neg.narrow(0, 0, 4)).size(), vec![4]);
    }
}
