// Epilogue shared by the GEMM kernels: bias, activation, residual, store.
// Expects bindings Y (out), optional B (bias) and R (residual), uniforms u.ldy/u.ldr.
//! param HAS_BIAS: true | false
//! param ACT: none | gelu | tanh
//! param RESIDUAL: true | false
#include lib_math

fn epilogue_store(m: u32, n: u32, acc: f32) {
  var v = acc;
#if HAS_BIAS
  v = v + f32(bias[n]);
#endif
#if ACT == gelu
  v = gelu_erf(v);
#endif
#if ACT == tanh
  v = tanh_safe(v);
#endif
#if RESIDUAL
  v = v + f32(res[m * u.ldr + n]);
#endif
  y[m * u.ldy + n] = T(v);
}
