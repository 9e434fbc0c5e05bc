/**
 * The kubelet stand-in (see kubelet/index.ts): this module keeps its import path.
 */
export {
  expandVars,
  type Kubelet,
  type KubeletOptions,
  type KubeletPod,
  startKubelet,
} from './kubelet/index.js';
