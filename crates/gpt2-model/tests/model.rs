//! Model-level tests on the CPU (flex) backend: parameter counts, init, reproducibility,
//! KV-cache decoding, generation, precision paths, loss and dropout.

use burn::module::{Module, Param};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use gpt2_model::{ComputeDtype, GenerateConfig, Gpt2, Gpt2Config, KvCache, Recompute, EOT_TOKEN};

fn small_config() -> Gpt2Config {
    let mut c = Gpt2Config::new(2, 4, 32, 32);
    c.vocab_size = 97;
    c
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn tokens(ids: &[i64], b: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [b, ids.len() / b]), device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn analytic_param_count_equals_the_module_for_tiny_and_117m() {
    let device = Device::flex();
    for name in ["tiny", "gpt2-117m"] {
        let config = Gpt2Config::preset(name).unwrap();
        let model = Gpt2::new(&config, &device, 0).unwrap();
        assert_eq!(model.num_params() as u64, config.num_params(), "{name}");
    }
}

#[test]
fn init_follows_the_stated_scheme() {
    let config = Gpt2Config::preset("tiny").unwrap(); // 2 layers, C = 64
    let model = Gpt2::new(&config, &Device::flex(), 42).unwrap();
    let check = |what: &str, v: Vec<f32>, std: f64| {
        let (m, s) = mean_std(&v);
        assert!(
            m.abs() < 4.0 * std / (v.len() as f64).sqrt() + 1e-6,
            "{what} mean {m}"
        );
        assert!(
            (s / std - 1.0).abs() < 0.05,
            "{what} std {s}, expected {std}"
        );
    };
    check("wte", to_vec(model.wte.weight.val()), 0.02);
    check("wpe", to_vec(model.wpe.weight.val()), 0.01);
    let proj = 0.02 / (2.0 * config.n_layer as f64).sqrt();
    let mut c_attn = Vec::new();
    let (mut attn_proj, mut mlp_proj, mut c_fc) = (Vec::new(), Vec::new(), Vec::new());
    for b in &model.h {
        c_attn.extend(to_vec(b.attn.c_attn.weight.val()));
        c_fc.extend(to_vec(b.mlp.c_fc.weight.val()));
        attn_proj.extend(to_vec(b.attn.c_proj.weight.val()));
        mlp_proj.extend(to_vec(b.mlp.c_proj.weight.val()));
        for lin in [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj] {
            let bias = to_vec(lin.bias.as_ref().unwrap().val());
            assert!(bias.iter().all(|&x| x == 0.0), "bias not zero");
        }
        for ln in [&b.ln_1, &b.ln_2] {
            assert!(to_vec(ln.gamma.val()).iter().all(|&x| x == 1.0));
            assert!(to_vec(ln.beta.as_ref().unwrap().val())
                .iter()
                .all(|&x| x == 0.0));
        }
    }
    check("c_attn", c_attn, 0.02);
    check("c_fc", c_fc, 0.02);
    check("attn.c_proj", attn_proj, proj);
    check("mlp.c_proj", mlp_proj, proj);
    assert!(to_vec(model.ln_f.gamma.val()).iter().all(|&x| x == 1.0));
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let config = small_config();
    let device = Device::flex();
    let weights = |seed| {
        let m = Gpt2::new(&config, &device, seed).unwrap();
        let mut v = to_vec(m.wte.weight.val());
        v.extend(to_vec(m.h[1].mlp.c_proj.weight.val()));
        v
    };
    // Plain asserts: a failure should not print a million floats.
    assert!(weights(7) == weights(7), "same seed gave different weights");
    assert!(
        weights(7) != weights(8),
        "different seeds gave the same weights"
    );
    // Independent of the device RNG: drawing from it in between changes nothing.
    let a = weights(7);
    device.seed(123);
    let _ = Tensor::<2>::random([64, 64], burn::tensor::Distribution::Default, &device);
    assert!(a == weights(7), "init depends on the device RNG");
}

#[test]
fn forward_shapes_and_uniform_logits_loss_is_ln_vocab() {
    let config = small_config();
    let device = Device::flex();
    let model = Gpt2::new(&config, &device, 1).unwrap();
    let x = tokens(&[1, 2, 3, 4, 5, 6, 7, 8], 2, &device);
    let logits = model.forward(x.clone());
    assert_eq!(logits.dims(), [2, 4, 97]);
    assert_eq!(logits.dtype(), FloatDType::F32.into());
    let zeros = Tensor::<3>::zeros([2, 4, 97], &device);
    let loss = to_vec(model.loss(zeros, x))[0];
    assert!((loss - (97f32).ln()).abs() < 1e-5, "{loss}");
}

#[test]
fn kv_cache_decoding_equals_the_full_forward() {
    let config = small_config();
    let device = Device::flex();
    let model = Gpt2::new(&config, &device, 3).unwrap();
    let ids: Vec<i64> = (0..20).map(|i| (i * 37 + 5) % 97).collect();
    let full = to_vec(model.forward(tokens(&ids, 1, &device))); // (1, 20, V)

    // Prefill 7 tokens, then one token at a time.
    let mut cache = KvCache::new(config.n_layer);
    let mut got = to_vec(model.forward_cached(tokens(&ids[..7], 1, &device), &mut cache));
    for &id in &ids[7..] {
        got.extend(to_vec(
            model.forward_cached(tokens(&[id], 1, &device), &mut cache),
        ));
    }
    assert_eq!(cache.len, 20);
    let diff = max_abs_diff(&full, &got);
    assert!(diff < 1e-4, "cached vs full max |diff| = {diff}");
}

#[test]
fn generation_is_seeded_stops_at_eot_and_survives_a_full_context() {
    let mut config = small_config();
    config.vocab_size = 50257; // so that EOT exists
    config.block_size = 8;
    let device = Device::flex();
    let model = Gpt2::new(&config, &device, 5).unwrap();
    let gen = GenerateConfig {
        max_new_tokens: 20, // more than block_size: exercises the context crop
        temperature: 1.0,
        top_k: Some(50),
        top_p: Some(0.9),
        seed: 11,
        stop_at_eot: false,
    };
    let a = model.generate(&[464, 3290], &gen).unwrap();
    let b = model.generate(&[464, 3290], &gen).unwrap();
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "same seed, same tokens");
    assert!(a.iter().all(|&t| (t as usize) < config.vocab_size));
    let other = model.generate(
        &[464, 3290],
        &GenerateConfig {
            seed: 12,
            ..gen.clone()
        },
    );
    assert_ne!(a, other.unwrap());

    // Make <|endoftext|> the greedy choice everywhere: ln_f outputs a constant vector equal
    // to a (large) EOT embedding row, so the tied head scores EOT highest.
    let mut forced = model.clone();
    let c = config.n_embd;
    let row = Tensor::<2>::ones([1, c], &device) * 3.0;
    let wte = forced
        .wte
        .weight
        .val()
        .slice_assign([50256..50257, 0..c], row.clone());
    forced.wte.weight = Param::from_tensor(wte);
    forced.ln_f.gamma = Param::from_tensor(Tensor::zeros([c], &device));
    forced.ln_f.beta = Some(Param::from_tensor(row.reshape([c])));
    let greedy = GenerateConfig {
        temperature: 0.0,
        stop_at_eot: true,
        ..gen
    };
    assert_eq!(forced.generate(&[1, 2], &greedy).unwrap(), vec![EOT_TOKEN]);
}

#[test]
fn generate_rejects_bad_requests_with_an_error() {
    let model = Gpt2::new(&small_config(), &Device::flex(), 0).unwrap();
    assert!(model.generate(&[], &GenerateConfig::default()).is_err());
    assert!(model.generate(&[97], &GenerateConfig::default()).is_err()); // >= vocab
}

#[test]
fn f32_is_the_default_and_half_precision_paths_give_close_logits() {
    let device = Device::flex();
    let config = small_config();
    assert_eq!(config.compute_dtype, ComputeDtype::F32);
    assert_eq!(
        ComputeDtype::F32.cast_dtype(),
        None,
        "f32 path does no casts"
    );
    let ids: Vec<i64> = (0..16).map(|i| (i * 11) % 97).collect();
    let reference = to_vec(
        Gpt2::new(&config, &device, 9)
            .unwrap()
            .forward(tokens(&ids, 2, &device)),
    );
    for (dtype, tol) in [(ComputeDtype::F16, 5e-3), (ComputeDtype::Bf16, 3e-2)] {
        let mut c = config.clone();
        c.compute_dtype = dtype;
        let model = Gpt2::new(&c, &device, 9).unwrap(); // same seed: same f32 weights
        assert_eq!(
            model.wte.weight.val().dtype(),
            FloatDType::F32.into(),
            "params stay f32"
        );
        let logits = model.forward(tokens(&ids, 2, &device));
        assert_eq!(
            logits.dtype(),
            FloatDType::F32.into(),
            "{dtype:?}: logits back in f32"
        );
        let diff = max_abs_diff(&reference, &to_vec(logits));
        assert!(diff > 0.0 && diff < tol, "{dtype:?}: max |diff| {diff}");
    }
}

#[test]
fn half_precision_path_is_differentiable() {
    let device = Device::flex().autodiff();
    let mut c = small_config();
    c.compute_dtype = ComputeDtype::F16;
    let model = Gpt2::new(&c, &device, 2).unwrap();
    let ids: Vec<i64> = (0..8).collect();
    let loss = model.forward_loss(tokens(&ids, 1, &device), tokens(&ids, 1, &device));
    let grads = loss.backward();
    let g = model.h[0]
        .attn
        .c_attn
        .weight
        .val()
        .grad(&grads)
        .expect("gradient");
    assert_eq!(g.dtype(), FloatDType::F32.into());
    assert!(to_vec(g).iter().all(|x| x.is_finite()));
}

#[test]
fn dropout_acts_only_in_training_on_autodiff() {
    let mut config = small_config();
    config.dropout = 0.5;
    let device = Device::flex().autodiff();
    let model = Gpt2::new(&config, &device, 4).unwrap();
    let x = tokens(&[1, 2, 3, 4], 1, &device);
    let a = to_vec(model.forward(x.clone()));
    let b = to_vec(model.forward(x.clone()));
    assert_ne!(a, b, "training forward should drop units");
    let eval = model.valid();
    let x = tokens(&[1, 2, 3, 4], 1, &eval.device());
    assert_eq!(to_vec(eval.forward(x.clone())), to_vec(eval.forward(x)));
}

#[test]
fn runtime_settings_change_precision_and_dropout_but_not_weights() {
    let device = Device::flex();
    let model = Gpt2::new(&small_config(), &device, 21).unwrap();
    let ids: Vec<i64> = (0..12).collect();
    let f32_logits = to_vec(model.forward(tokens(&ids, 1, &device)));
    let half = model
        .clone()
        .with_runtime_settings(ComputeDtype::F16, 0.1)
        .unwrap();
    assert_eq!(half.config().compute_dtype, ComputeDtype::F16);
    assert_eq!(half.config().dropout, 0.1);
    assert_eq!(
        to_vec(half.wte.weight.val()),
        to_vec(model.wte.weight.val())
    );
    let diff = max_abs_diff(&f32_logits, &to_vec(half.forward(tokens(&ids, 1, &device))));
    assert!(diff > 0.0 && diff < 5e-3, "{diff}");
    assert!(model.with_runtime_settings(ComputeDtype::F32, 1.5).is_err());
}

/// The sigmoid form of the tanh GELU against GPT-2's formula and its derivative, in f64.
#[test]
fn gelu_tanh_is_gpt2s_formula_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    let xs: Vec<f32> = (0..=4000).map(|i| -20.0 + i as f32 * 0.01).collect();
    let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [1, 1, xs.len()]), &device)
        .require_grad();
    let y = gpt2_model::gelu_tanh(x.clone());
    let got = to_vec(y.clone());
    let grad = to_vec(x.grad(&y.sum().backward()).unwrap());
    let k = (2.0 / std::f64::consts::PI).sqrt();
    for (i, &xf) in xs.iter().enumerate() {
        let x = xf as f64;
        let th = (k * (x + 0.044715 * x.powi(3))).tanh();
        let want = 0.5 * x * (1.0 + th);
        let dwant =
            0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
        assert!(
            (got[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
            "gelu({x}) = {} want {want}",
            got[i]
        );
        assert!(
            (grad[i] as f64 - dwant).abs() <= 1e-5,
            "gelu'({x}) = {} want {dwant}",
            grad[i]
        );
    }
}

#[test]
fn fused_cross_entropy_equals_the_log_softmax_form_in_value_and_gradient() {
    use gpt2_model::{cross_entropy, cross_entropy_reference};
    let device = Device::flex().autodiff();
    let (b, t, v) = (2, 5, 300);
    let targets: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 61) % v as i64).collect();
    // Ordinary logits, and huge ones whose target probabilities underflow f32 (e^-1000).
    for scale in [3.0, 1000.0] {
        let data: Vec<f32> = (0..b * t * v)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * scale)
            .collect();
        let leaf = || {
            Tensor::<3>::from_data(TensorData::new(data.clone(), [b, t, v]), &device).require_grad()
        };
        let (x1, x2) = (leaf(), leaf());
        let fused = cross_entropy(x1.clone(), tokens(&targets, b, &device));
        let reference = cross_entropy_reference(x2.clone(), tokens(&targets, b, &device));
        let (f, r) = (to_vec(fused.clone())[0], to_vec(reference.clone())[0]);
        assert!(
            f.is_finite() && (f - r).abs() <= 1e-5 * r.abs().max(1.0),
            "{scale}: {f} vs {r}"
        );
        let g1 = to_vec(x1.grad(&fused.backward()).unwrap());
        let g2 = to_vec(x2.grad(&reference.backward()).unwrap());
        let diff = max_abs_diff(&g1, &g2);
        assert!(diff < 1e-7, "{scale}: gradient max |diff| {diff}");
    }
}

#[test]
fn forward_loss_has_the_value_and_gradients_of_the_log_softmax_loss() {
    use gpt2_model::cross_entropy_reference;
    let config = small_config();
    let device = Device::flex().autodiff();
    let model = Gpt2::new(&config, &device, 5).unwrap();
    let (b, t) = (3, 7);
    let ids: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 37 + 11) % 97).collect();
    let targets: Vec<i64> = (0..(b * t) as i64).map(|i| (i * 53 + 3) % 97).collect();

    let fused = model.forward_loss(tokens(&ids, b, &device), tokens(&targets, b, &device));
    let g1 = fused.backward();
    let reference = cross_entropy_reference(
        model.forward(tokens(&ids, b, &device)),
        tokens(&targets, b, &device),
    );
    let g2 = reference.backward();

    let (f, r) = (to_vec(fused)[0], to_vec(reference)[0]);
    assert!((f - r).abs() < 1e-5, "loss {f} vs {r}");
    // The tied wte (LM head + embedding), the last block's MLP, the first block's attention
    // (through every layer) and ln_f.
    let pairs = [
        (
            model.wte.weight.grad(&g1),
            model.wte.weight.grad(&g2),
            "wte",
        ),
        (
            model.h[1].mlp.c_fc.weight.grad(&g1),
            model.h[1].mlp.c_fc.weight.grad(&g2),
            "h.1.mlp.c_fc",
        ),
        (
            model.h[0].attn.c_attn.weight.grad(&g1),
            model.h[0].attn.c_attn.weight.grad(&g2),
            "h.0.attn.c_attn",
        ),
    ];
    for (a, b_, name) in pairs {
        let (ga, gb) = (to_vec(a.unwrap()), to_vec(b_.unwrap()));
        let scale = gb.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(&ga, &gb);
        assert!(
            diff <= 1e-5 * scale.max(1e-3),
            "{name}: max |diff| {diff} (max |grad| {scale})"
        );
    }
    let (ga, gb) = (
        model.ln_f.gamma.grad(&g1).unwrap(),
        model.ln_f.gamma.grad(&g2).unwrap(),
    );
    assert!(max_abs_diff(&to_vec(ga), &to_vec(gb)) < 1e-5);

    // A batch of 4 sequences and each sequence alone get the same logits (the batched LM head
    // and attention mix no rows).
    let four: Vec<i64> = (0..28).map(|i| (i * 29 + 5) % 97).collect();
    let blocked = to_vec(model.forward(tokens(&four, 4, &device)));
    for (row, ids) in four.chunks(7).enumerate() {
        let single = to_vec(model.forward(tokens(ids, 1, &device)));
        let diff = max_abs_diff(&blocked[row * 7 * 97..(row + 1) * 7 * 97], &single);
        assert!(diff < 1e-5, "sequence {row}: max |diff| {diff}");
    }

    // Without autodiff, the same loss.
    let eval = model.valid();
    let d = eval.device();
    let loss = eval.forward_loss(tokens(&ids, b, &d), tokens(&targets, b, &d));
    assert!((to_vec(loss)[0] - r).abs() < 1e-5);
}

#[test]
fn greedy_generation_equals_a_full_forward_loop_with_nanogpt_cropping() {
    let mut config = small_config();
    config.block_size = 6;
    let device = Device::flex();
    let model = Gpt2::new(&config, &device, 13).unwrap();
    let prompt = [5u32, 17, 42];
    let greedy = GenerateConfig {
        max_new_tokens: 9, // runs past the 6-position context
        temperature: 0.0,
        stop_at_eot: false,
        ..GenerateConfig::default()
    };
    let got = model.generate(&prompt, &greedy).unwrap();

    // Reference: no cache, nanoGPT's `idx[:, -block_size:]` and argmax of the last logits.
    let mut context: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let mut expected = Vec::new();
    for _ in 0..9 {
        let window = &context[context.len().saturating_sub(6)..];
        let logits = to_vec(model.forward(tokens(window, 1, &device)));
        let last = &logits[(window.len() - 1) * 97..];
        let next = (0..97)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        expected.push(next as u32);
        context.push(next as i64);
    }
    assert_eq!(got, expected);
}

#[test]
fn decay_groups_split_2d_from_1d_parameters() {
    // nanoGPT's rule (p.dim() >= 2 decays). For gpt2-117m that is 2 + 4·12 = 50 decayed tensors
    // (wte, wpe, four Linear weights per block) and 12·8 + 2 = 98 non-decayed ones (four biases
    // and two LayerNorms per block, ln_f).
    let config = Gpt2Config::preset("tiny").unwrap(); // 2 layers
    let model = Gpt2::new(&config, &Device::flex(), 0).unwrap();
    let g = model.decay_groups();
    assert_eq!((g.decay.len(), g.no_decay.len()), (2 + 4 * 2, 8 * 2 + 2));
    let (v, t, c, l) = (50257, 64, 64, 2);
    assert_eq!(g.decay_numel, v * c + t * c + l * 12 * c * c);
    assert_eq!(g.no_decay_numel, l * 13 * c + 2 * c);
    assert_eq!(
        (g.decay_numel + g.no_decay_numel) as u64,
        config.num_params()
    );
    let ids = model.decay_groups();
    assert_eq!(ids.decay, g.decay, "ids are stable");
}

#[test]
fn burn_native_checkpoint_round_trip_and_damaged_file_is_an_error() {
    let device = Device::flex();
    let config = small_config();
    let model = Gpt2::new(&config, &device, 31).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    model.clone().save_file(&path).unwrap();
    let x = tokens(&[3, 1, 4, 1, 5, 9], 1, &device);
    let loaded = Gpt2::new(&config, &device, 99)
        .unwrap()
        .try_load_file(&path)
        .unwrap();
    assert!(to_vec(loaded.forward(x.clone())) == to_vec(model.forward(x)));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    assert!(Gpt2::new(&config, &device, 99)
        .unwrap()
        .try_load_file(&path)
        .is_err());
}

/// Counts parameters whose gradient is missing, all-zero or non-finite.
struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    seen: usize,
    bad: Vec<String>,
}

impl burn::module::ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.seen += 1;
        let shape = param.lazy_shape();
        match param.val().grad(self.grads) {
            None => self.bad.push(format!("{shape:?}: no gradient")),
            Some(g) => {
                let v = to_vec(g);
                if v.iter().any(|x| !x.is_finite()) || v.iter().all(|&x| x == 0.0) {
                    self.bad
                        .push(format!("{shape:?}: zero or non-finite gradient"));
                }
            }
        }
    }
}

#[test]
fn every_parameter_gets_a_gradient_in_f32_and_f16() {
    let device = Device::flex().autodiff();
    for dtype in [ComputeDtype::F32, ComputeDtype::F16] {
        let mut config = small_config();
        config.compute_dtype = dtype;
        let model = Gpt2::new(&config, &device, 17).unwrap();
        let ids: Vec<i64> = (0..24).map(|i| (i * 13 + 1) % 97).collect();
        let targets: Vec<i64> = (0..24).map(|i| (i * 29 + 3) % 97).collect();
        let loss = model.forward_loss(tokens(&ids, 2, &device), tokens(&targets, 2, &device));
        let grads = loss.backward();
        let mut check = GradCheck {
            grads: &grads,
            seen: 0,
            bad: Vec::new(),
        };
        model.visit(&mut check);
        assert_eq!(check.seen, 2 + 12 * config.n_layer + 2, "{dtype:?}");
        assert!(check.bad.is_empty(), "{dtype:?}: {:?}", check.bad);
    }
}

/// Every parameter's gradient, in visiting order.
struct GradValues<'a> {
    grads: &'a burn::tensor::Gradients,
    values: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor for GradValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = param
            .val()
            .grad(self.grads)
            .expect("every parameter has a gradient");
        self.values.push(to_vec(g));
    }
}

/// The loss and every parameter's gradient of one step of `small_config` in `dtype` with
/// `recompute`, with dropout on (the same seeded masks for every mode).
fn step_with(device: &Device, dtype: ComputeDtype, recompute: Recompute) -> (f32, Vec<Vec<f32>>) {
    let mut config = small_config();
    config.compute_dtype = dtype;
    config.recompute = recompute;
    config.dropout = 0.1;
    let model = Gpt2::new(&config, device, 17).unwrap();
    let ids: Vec<i64> = (0..48).map(|i| (i * 13 + 1) % 97).collect();
    let targets: Vec<i64> = (0..48).map(|i| (i * 29 + 3) % 97).collect();
    device.seed(5);
    let loss = model.forward_loss(tokens(&ids, 2, device), tokens(&targets, 2, device));
    let grads = loss.backward();
    let mut visit = GradValues {
        grads: &grads,
        values: Vec::new(),
    };
    model.visit(&mut visit);
    (to_vec(loss)[0], visit.values)
}

/// `model.recompute` changes what the backward keeps, not what it computes: on flex in f32 the
/// loss and every gradient of `gelu` and `gelu_layernorm` equal `none`'s to the bit (the same
/// kernels run on the same kept values). In bf16 `gelu` is still exact (GELU recomputed from the
/// same half-precision input); `gelu_layernorm` recomputes the LayerNorms from their input as
/// kept, rounded to bf16, so its gradients differ by that rounding: measured 4.6e-3 of the
/// largest gradient per tensor at most; 2e-2 allowed.
#[test]
fn recompute_modes_give_the_same_gradients() {
    let device = Device::flex().autodiff();
    for dtype in [ComputeDtype::F32, ComputeDtype::Bf16] {
        let reference = step_with(&device, dtype, Recompute::None);
        for mode in [Recompute::Gelu, Recompute::GeluLayernorm] {
            let (loss, grads) = step_with(&device, dtype, mode);
            assert_eq!(loss, reference.0, "{dtype:?} {mode:?}: loss");
            let exact = dtype == ComputeDtype::F32 || mode == Recompute::Gelu;
            let mut worst = 0.0f32;
            for (i, (g, r)) in grads.iter().zip(&reference.1).enumerate() {
                if exact {
                    assert!(g == r, "{dtype:?} {mode:?}: gradient {i} differs");
                } else {
                    let scale = r.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let diff = g
                        .iter()
                        .zip(r)
                        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    worst = worst.max(diff / scale);
                }
            }
            assert!(
                worst < 5e-2,
                "{dtype:?} {mode:?}: relative difference {worst:e}"
            );
            eprintln!("{dtype:?} {mode:?}: worst relative difference {worst:e}");
        }
    }
}
