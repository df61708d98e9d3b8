//! Parameter groups for weight decay, nanoGPT's `configure_optimizers` rule: every parameter
//! with 2 or more dimensions (the Linear weights and the wte/wpe embeddings) is decayed; the
//! 1-D ones (biases, LayerNorm weights and biases) are not (GPT-3 paper / llm.c: "weight decay
//! 0.1 on 2-D weight matrices and embeddings only"). The tied LM head is `wte` itself, so it is
//! listed once.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::model::Gpt2;

/// Parameter ids split by whether AdamW should decay them.
#[derive(Debug, Clone, Default)]
pub struct DecayGroups {
    /// Ids of ≥2-D parameters (Linear weights, wte, wpe).
    pub decay: Vec<ParamId>,
    /// Ids of 1-D parameters (biases, LayerNorm weight/bias).
    pub no_decay: Vec<ParamId>,
    /// Number of values in the decayed parameters.
    pub decay_numel: usize,
    /// Number of values in the non-decayed parameters.
    pub no_decay_numel: usize,
}

impl ModuleVisitor for DecayGroups {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let numel = param.lazy_shape().num_elements();
        if D >= 2 {
            self.decay.push(param.id);
            self.decay_numel += numel;
        } else {
            self.no_decay.push(param.id);
            self.no_decay_numel += numel;
        }
    }
}

impl Gpt2 {
    /// Splits the parameters into decayed (≥2-D) and non-decayed (1-D) groups.
    pub fn decay_groups(&self) -> DecayGroups {
        let mut groups = DecayGroups::default();
        self.visit(&mut groups);
        groups
    }
}
