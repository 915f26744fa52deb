import { LabIcon } from '@jupyterlab/ui-components';

const GPU_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M2 7h18a2 2 0 0 1 2 2v7a2 2 0 0 1-2 2H6v2H4V9H2zm4 2v7h14V9zm3 1.5a2 2 0 1 1 0 4 2 2 0 0 1 0-4zm6 0a2 2 0 1 1 0 4 2 2 0 0 1 0-4z"/>
  </g>
</svg>`;

const SANDBOX_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 4h16v16H4zm2 2v12h12V6zm2 2h8v2H8zm0 4h8v2H8z"/>
  </g>
</svg>`;

export const gpuIcon = new LabIcon({ name: 'burstlab-lab:gpu', svgstr: GPU_SVG });
export const sandboxIcon = new LabIcon({ name: 'burstlab-lab:sandbox', svgstr: SANDBOX_SVG });
